#include "broker/exchange/submission.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "adapters/cld/cld.h"
#include "audit/log.h"
#include "adapters/common/csv.h"
#include "adapters/formats.h"
#include "core/nhs_number.h"
#include "core/reasons.h"
#include "core/sha256.h"
#include "core/status.h"
#include "core/time.h"
#include "policy/minimise.h"
#include "policy/agreements.h"

namespace carebroker {
namespace {

// A denial about the row's person, not the flow: the row is withheld and
// the submission goes on.
bool IsPersonalReason(absl::string_view why) {
  return why == reason::kConsentDissent || why == reason::kConsentRequired || why == reason::kNationalOptOut ||
         why == reason::kOverrideJustificationMissing;
}

// The rows of one chunk, read, decided and minimised into `out`.
class ChunkMinimiser {
 public:
  ChunkMinimiser(const SubmissionContext& c, uint32_t n, v1::SubmissionProgress* p, SubmissionChunk* out)
      : c_(c), n_(n), p_(*p), out_(out->rows), audit_(out->row_audit) {
    in_.sender = {c.sender, c.config.FindOrganisation(c.sender)->kind()};
    const v1::Organisation* to = c.config.FindOrganisation(c.recipient);
    in_.recipient = {c.recipient, to != nullptr ? to->kind() : v1::ORGANISATION_KIND_UNSPECIFIED};
    in_.workflow = p->workflow();
    in_.purpose = policy::PurposeFromWire(p->purpose());
    in_.justification = p->justification();
    in_.now = c.now;
    seen_.la_code = p->la_code();
    seen_.period_start = p->period_start();
    seen_.period_end = p->period_end();
    released_.insert(p->released_fields().begin(), p->released_fields().end());
    withheld_.insert(p->withheld_fields().begin(), p->withheld_fields().end());
    *entry_.mutable_at() = ToTimestamp(c.now);
    entry_.set_actor(c.sender.str());
    entry_.set_actor_role("agency");
    entry_.set_message_id(c.id.str());
    entry_.set_sender(c.sender.str());
    entry_.set_recipient(c.recipient.str());
    entry_.set_workflow(p->workflow());
    entry_.set_purpose(p->purpose());
  }

  // Reads the header carried from an earlier chunk.
  absl::Status Header(absl::string_view header) {
    return adapters::ForEachCsvRow(header, {}, [this](const adapters::CsvRowView& cells) {
      auto r = cld::RowReader::FromHeader(cells);
      if (!r.ok()) return r.status();
      reader_.emplace(*std::move(r));
      return absl::OkStatus();
    });
  }

  // Every row of `text`, which holds whole rows only.
  absl::Status Rows(absl::string_view text) {
    adapters::CsvLimits limits;
    limits.max_bytes = text.size();
    limits.max_rows = text.size();  // at least a byte a row
    absl::Status s = adapters::ForEachCsvRow(text, limits, [this](const adapters::CsvRowView& cells) { return Row(cells); });
    if (!s.ok() && ReasonOf(s) == reason::kCsvInvalid) {
      return InvalidArgument(reason::kCsvInvalid, absl::StrCat("chunk ", n_, ", counting lines from its first row: ",
                                                               s.message()));
    }
    return s;
  }

  // Writes what was counted back to the progress.
  void Finish() {
    p_.set_la_code(seen_.la_code);
    p_.set_period_start(seen_.period_start);
    p_.set_period_end(seen_.period_end);
    p_.clear_released_fields();
    for (const auto& f : released_) p_.add_released_fields(f);
    p_.clear_withheld_fields();
    for (const auto& f : withheld_) p_.add_withheld_fields(f);
  }

  bool has_header() const { return reader_.has_value(); }

 private:
  absl::Status Row(const adapters::CsvRowView& cells) {
    const uint64_t number = p_.rows() + 1;
    if (!reader_.has_value()) {
      auto header = cld::RowReader::FromHeader(cells);
      if (!header.ok()) return header.status();
      reader_.emplace(*std::move(header));
      p_.set_rows(number);
      // Kept, as read, for the chunks after this one.
      p_.clear_header();
      adapters::AppendCsvRow(adapters::CsvRow(cells.begin(), cells.end()), p_.mutable_header());
      adapters::AppendCsvRow(cld::Columns(), &out_);
      return absl::OkStatus();
    }
    auto row = reader_->Read(cells, number, &seen_, {.keep_invalid_nhs_numbers = true});
    if (!row.ok()) return row.status();
    p_.set_rows(number);
    v1::CareRecord& record = row->record;
    const std::string& nhs = record.person().nhs_number();
    // The entry's person, kept before minimising may replace the number.
    const std::string subject = IsValidNhsNumber(nhs) ? nhs : std::string();
    std::optional<policy::PersonConsent> person;
    const std::vector<std::string> keys = policy::PersonKeys(nhs, record.person().local_identifiers());
    if (!keys.empty()) person = c_.consent.FindAll(keys);
    in_.consent = person ? &*person : nullptr;
    const policy::Decision d = c_.policy.Decide(in_);
    if (!nhs.empty() && !IsValidNhsNumber(nhs) && !(d.allowed && d.flow->flow->accept_unverified_nhs_number())) {
      return InvalidArgument(reason::kNhsNumberInvalid,
                             absl::StrCat("row ", number, ", column NHS Number: not a valid NHS number (ten digits, "
                                          "Modulus 11)"));
    }
    if (!d.allowed) {
      const std::string& why = d.reasons.front();
      if (!IsPersonalReason(why)) {  // the flow itself no longer allows the submission
        return Error(absl::StatusCode::kPermissionDenied, why,
                     absl::StrCat("denied: ", why, " (row ", number, "): the agreements in force no longer allow "
                                  "this submission"));
      }
      ++(*p_.mutable_withheld_rows())[why];
      v1::AuditEntry e = RowEntry(v1::AUDIT_EVENT_ROW_WITHHELD, d, number);
      for (const auto& r : d.reasons) e.add_reasons(r);
      audit_.push_back(c_.entries.Make(std::move(e), subject));
      return absl::OkStatus();
    }
    const std::string* key = nullptr;
    if (d.flow->minimiser.needs_key() && (key = c_.config.PseudonymKey(c_.recipient)) == nullptr) {
      return Error(absl::StatusCode::kFailedPrecondition, reason::kPseudonymKeyMissing,
                   absl::StrCat("no pseudonymisation key for ", c_.recipient.str()));
    }
    v1::AuditEntry e = RowEntry(v1::AUDIT_EVENT_ROW_RELEASED, d, number);
    for (auto& f : d.flow->minimiser.Apply(&record, key != nullptr ? *key : "")) {
      e.add_withheld_fields(f);
      withheld_.insert(std::move(f));
    }
    for (auto& f : policy::PresentPaths(record)) {
      e.add_released_fields(f);
      released_.insert(std::move(f));
    }
    if (d.overridden) {
      e.set_safeguarding_override(true);
      e.set_justification(p_.justification());
      for (const auto& r : d.reasons) e.add_reasons(r);  // SAFEGUARDING_OVERRIDE
    }
    // The LA Code is the sender's, as for a record rendered in CLD.
    const cld::Submission details{c_.sender.str(), seen_.period_start, seen_.period_end, {}};
    if (auto s = cld::AppendCldRows(details, record, &out_, absl::StrCat("row ", number)); !s.ok()) return s;
    p_.set_released_rows(p_.released_rows() + 1);
    audit_.push_back(c_.entries.Make(std::move(e), subject));
    return absl::OkStatus();
  }

  // The entry of row `number`, decided `d`, without its outcome.
  v1::AuditEntry RowEntry(v1::AuditEvent event, const policy::Decision& d, uint64_t number) const {
    v1::AuditEntry e = entry_;
    e.set_event(event);
    if (d.flow != nullptr) {
      e.set_agreement_id(d.flow->agreement->agreement.id());
      e.set_agreement_version(d.flow->agreement->agreement.version());
      e.set_flow(d.flow->flow->name());
      *e.mutable_legal_basis() = d.flow->flow->legal_basis();
    }
    e.set_detail(absl::StrCat("CLD submission row ", number));
    return e;
  }

  const SubmissionContext& c_;
  const uint32_t n_;
  v1::SubmissionProgress& p_;
  std::string& out_;
  std::vector<AuditRecord>& audit_;
  v1::AuditEntry entry_;  // what every row's entry shares
  policy::DecisionInput in_;
  std::optional<cld::RowReader> reader_;
  cld::Submission seen_;
  std::set<std::string> released_, withheld_;

};

}  // namespace

absl::StatusOr<SubmissionChunk> MinimiseSubmissionChunk(const SubmissionContext& context, absl::string_view chunk,
                                                    uint32_t n, bool last, v1::SubmissionProgress* progress) {
  v1::SubmissionProgress p = *progress;  // taken only if the whole chunk is
  {
    // d1 = H(c1); dn = H(d(n-1) || cn): the first chunk's digest is its own.
    const Sha256Digest d = Sha256Parts({p.digest(), chunk});  // hashed in place, not joined
    p.set_digest(std::string(reinterpret_cast<const char*>(d.data()), d.size()));
  }
  SubmissionChunk out;
  out.rows.reserve(chunk.size() + p.partial().size() + 4096);  // released rows are about the size of those sent
  ChunkMinimiser rows(context, n, &p, &out);
  if (!p.header().empty()) {
    if (auto s = rows.Header(p.header()); !s.ok()) return s;
  }
  // Rows break off only where a line break outside quotes ends them. The
  // carried part is at most one row: it and the chunk's start up to its
  // first row end are read together, the rest of the chunk where it lies.
  const bool quoted = std::count(p.partial().begin(), p.partial().end(), '"') % 2 == 1;
  adapters::CsvRowEnds ends = adapters::FindCsvRowEnds(chunk, quoted);
  if (last) ends.last = chunk.size();
  if (!last && ends.last == 0) {  // no row ends in this chunk
    p.mutable_partial()->append(chunk.data(), chunk.size());
  } else {
    if (ends.first == 0) ends.first = ends.last;
    std::string head = std::move(*p.mutable_partial());
    head.append(chunk.data(), ends.first);
    if (auto s = rows.Rows(head); !s.ok()) return s;
    head = std::string();
    if (auto s = rows.Rows(chunk.substr(ends.first, ends.last - ends.first)); !s.ok()) return s;
    p.set_partial(std::string(chunk.substr(ends.last)));
  }
  if (p.partial().size() > kMaxSubmissionRowBytes) {
    return InvalidArgument(reason::kCldInvalid, absl::StrCat("row ", p.rows() + 1, " is longer than ",
                                                             kMaxSubmissionRowBytes, " bytes"));
  }
  if (last && !rows.has_header()) return InvalidArgument(reason::kCldInvalid, "the file has no header row");
  rows.Finish();
  p.set_bytes_out(p.bytes_out() + out.rows.size());
  *progress = std::move(p);
  return out;
}

v1::AuditEntry SubmissionAuditPatch(const v1::SubmissionProgress& p) {
  v1::AuditEntry e;
  e.set_payload_digest(p.digest());
  uint64_t withheld = 0;
  std::vector<std::string> by_reason;
  for (const auto& [why, count] : std::map<std::string, uint64_t>(p.withheld_rows().begin(), p.withheld_rows().end())) {
    withheld += count;
    by_reason.push_back(absl::StrCat(why, " ", count));
  }
  const uint64_t rows = p.rows() > 0 ? p.rows() - 1 : 0;  // not the header
  std::string detail = absl::StrCat("CLD submission: ", rows, " rows, ", p.released_rows(), " released, ", withheld,
                                    " withheld");
  if (!by_reason.empty()) absl::StrAppend(&detail, " (", absl::StrJoin(by_reason, ", "), ")");
  absl::StrAppend(&detail, "; CLD out");
  e.set_detail(std::move(detail));
  for (const auto& f : p.released_fields()) e.add_released_fields(f);
  for (const auto& f : p.withheld_fields()) e.add_withheld_fields(f);
  return e;
}

bool IsSubmissionContentType(absl::string_view content_type) {
  auto f = adapters::FormatByContentType(content_type);
  return f.ok() && *f == adapters::Format::kCld;
}

}  // namespace carebroker
