#include "broker/server/audit_service.h"

#include <deque>
#include <type_traits>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "audit/log.h"
#include "audit/query.h"
#include "core/time.h"
#include "core/files.h"
#include "core/nhs_number.h"
#include "core/status.h"
#include "core/reasons.h"
#include "broker/server/grpc_status.h"

namespace carebroker {
namespace {

constexpr uint32_t kMaxQueryEntries = 100000;
constexpr int kChunk = 1000;

template <typename Out>
class Refused final : public grpc::ServerWriteReactor<Out> {
 public:
  explicit Refused(const absl::Status& s) { this->Finish(ToGrpcStatus(s)); }
  void OnDone() override { delete this; }
};

// Streams the log from the store in chunks, one read or one write in
// flight at a time. `Emit` turns a chunk of rows into outputs and says
// whether to stop. An export ends with every signed tree head, read before
// the entries so each head covers only entries the export holds.
template <typename Out>
class ScanReactor final : public grpc::ServerWriteReactor<Out> {
 public:
  using Emit = std::function<bool(const std::vector<AuditRow>& rows, std::deque<Out>* out)>;

  ScanReactor(const ServiceDeps& d, AuditRead read, Emit emit)
      : d_(d), read_(std::move(read)), emit_(std::move(emit)) {}

  // Makes the query's own entry durable, then streams.
  void Start(AuditRecord query) {
    std::vector<AuditRecord> records;
    records.push_back(std::move(query));
    d_.store.AppendAudit(std::move(records), [this](absl::StatusOr<uint64_t> r) {
      if (!r.ok()) {
        this->Finish(ToGrpcStatus(Error(absl::StatusCode::kUnavailable, reason::kAuditUnavailable,
                                        "the audit log cannot record this query; nothing was read")));
        return;
      }
      if constexpr (std::is_same_v<Out, v1::ExportChunk>) {
        ReadHeadsThenFetch();
      } else {
        Fetch();
      }
    });
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock l(&mu_);
      queue_.pop_front();
    }
    if (!ok) {
      this->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "stream broken"));
      return;
    }
    Pump();
  }
  void OnDone() override { delete this; }

 private:
  void ReadHeadsThenFetch() {
    d_.store.ReadTreeHeads([this](absl::StatusOr<std::vector<v1::SignedTreeHead>> heads) {
      if (!heads.ok()) {
        this->Finish(ToGrpcStatus(heads.status()));
        return;
      }
      v1::ExportChunk& last = tail_.emplace_back();
      for (auto& h : *heads) *last.add_tree_heads() = std::move(h);
      Fetch();
    });
  }

  void Fetch() {
    d_.store.ReadAudit(read_, [this](absl::StatusOr<std::vector<AuditRow>> rows) {
      if (!rows.ok()) {
        this->Finish(ToGrpcStatus(rows.status()));
        return;
      }
      {
        absl::MutexLock l(&mu_);
        const bool stop = emit_(*rows, &queue_);
        if (stop || static_cast<int>(rows->size()) < read_.max) {
          exhausted_ = true;
          for (auto& t : tail_) queue_.push_back(std::move(t));
        } else {
          read_.from = rows->back().index + 1;
        }
      }
      Pump();
    });
  }

  // Writes the next output, or reads the next chunk, or finishes.
  void Pump() {
    bool fetch = false, finish = false;
    {
      absl::MutexLock l(&mu_);
      if (!queue_.empty()) {
        this->StartWrite(&queue_.front());
        return;
      }
      exhausted_ ? finish = true : fetch = true;
    }
    if (finish) this->Finish(grpc::Status::OK);
    if (fetch) Fetch();
  }

  const ServiceDeps& d_;
  AuditRead read_;
  Emit emit_;
  std::deque<Out> tail_;  // sent after the last chunk (an export's tree heads)
  absl::Mutex mu_;
  std::deque<Out> queue_ ABSL_GUARDED_BY(mu_);  // front: being written
  bool exhausted_ ABSL_GUARDED_BY(mu_) = false;
};

absl::StatusOr<Identity> Officer(grpc::CallbackServerContext* ctx, const ServiceDeps& d) {
  return Authorize(ctx, d, Role::kIgOfficer);
}

AuditRecord QueryRecord(const ServiceDeps& d, const Identity& who, const std::string& what) {
  v1::AuditEntry e;
  *e.mutable_at() = ToTimestamp(d.clock.Now());
  e.set_event(v1::AUDIT_EVENT_AUDIT_QUERY);
  e.set_actor(who.org.str());
  e.set_actor_role("ig-officer");
  e.set_detail(what);
  return d.audit.entries().Make(std::move(e));
}

}  // namespace

grpc::ServerWriteReactor<v1::AuditEntry>* AuditService::Query(grpc::CallbackServerContext* ctx,
                                                               const v1::AuditQueryRequest* req) {
  auto id = Officer(ctx, d_);
  if (!id.ok()) return new Refused<v1::AuditEntry>(id.status());
  const v1::AuditFilter& f = req->filter();
  if (!f.nhs_number().empty() && !IsValidNhsNumber(f.nhs_number())) {
    return new Refused<v1::AuditEntry>(
        InvalidArgument(reason::kNhsNumberInvalid, "filter.nhs_number is not a valid NHS number (ten digits, Modulus 11)"));
  }
  const std::string subject = f.nhs_number().empty() ? f.subject() : d_.audit.entries().Subject(f.nhs_number());
  uint32_t left = req->limit() == 0 || req->limit() > kMaxQueryEntries ? kMaxQueryEntries : req->limit();
  auto emit = [f, subject, left](const std::vector<AuditRow>& rows, std::deque<v1::AuditEntry>* out) mutable {
    for (const AuditRow& r : rows) {
      v1::AuditEntry e;
      if (!e.ParseFromString(r.entry) || !audit::Matches(e, f, subject)) continue;
      out->push_back(std::move(e));
      if (--left == 0) return true;
    }
    return false;
  };
  auto* reactor = new ScanReactor<v1::AuditEntry>(d_, AuditRead{0, kChunk, subject, false}, emit);
  reactor->Start(QueryRecord(d_, *id, absl::StrCat("query: ", audit::DescribeFilter(f, subject))));
  return reactor;
}

grpc::ServerWriteReactor<v1::ExportChunk>* AuditService::Export(grpc::CallbackServerContext* ctx,
                                                                const v1::ExportRequest* req) {
  auto id = Officer(ctx, d_);
  if (!id.ok()) return new Refused<v1::ExportChunk>(id.status());
  auto emit = [](const std::vector<AuditRow>& rows, std::deque<v1::ExportChunk>* out) {
    if (rows.empty()) return false;
    v1::ExportChunk& c = out->emplace_back();
    for (const AuditRow& r : rows) {
      auto* e = c.add_entries();
      e->set_index(r.index);
      e->set_entry(r.entry);
      e->set_leaf_hash(r.leaf_hash);
    }
    return false;
  };
  auto* reactor = new ScanReactor<v1::ExportChunk>(d_, AuditRead{req->from_index(), kChunk, "", false}, emit);
  reactor->Start(QueryRecord(d_, *id, absl::StrCat("export from entry ", req->from_index())));
  return reactor;
}

grpc::ServerUnaryReactor* AuditService::GetTreeHead(grpc::CallbackServerContext* ctx, const v1::GetTreeHeadRequest*,
                                                    v1::SignedTreeHead* resp) {
  auto id = Officer(ctx, d_);
  if (!id.ok()) return FinishNow(ctx, id.status());
  *resp = d_.audit.LatestHead();
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* AuditService::ProveInclusion(grpc::CallbackServerContext* ctx,
                                                       const v1::InclusionRequest* req, v1::InclusionProof* resp) {
  auto id = Officer(ctx, d_);
  if (!id.ok()) return FinishNow(ctx, id.status());
  auto p = d_.audit.ProveInclusion(req->index(), req->tree_size());
  if (!p.ok()) return FinishNow(ctx, p.status());
  *resp = *std::move(p);
  auto* reactor = ctx->DefaultReactor();
  d_.store.ReadAudit(AuditRead{req->index(), 1, "", false}, [reactor, resp](absl::StatusOr<std::vector<AuditRow>> r) {
    if (r.ok() && !r->empty()) resp->set_entry((*r)[0].entry);
    reactor->Finish(ToGrpcStatus(r.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* AuditService::ProveConsistency(grpc::CallbackServerContext* ctx,
                                                         const v1::ConsistencyRequest* req,
                                                         v1::ConsistencyProof* resp) {
  auto id = Officer(ctx, d_);
  if (!id.ok()) return FinishNow(ctx, id.status());
  auto p = d_.audit.ProveConsistency(req->first(), req->second());
  if (!p.ok()) return FinishNow(ctx, p.status());
  *resp = *std::move(p);
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* AuditService::ReviewOverride(grpc::CallbackServerContext* ctx,
                                                       const v1::OverrideReviewRequest* req,
                                                       v1::OverrideReviewResponse* resp) {
  constexpr size_t kMaxNote = 4096;
  auto id = Officer(ctx, d_);
  if (!id.ok()) return FinishNow(ctx, id.status());
  if (req->outcome() != v1::OVERRIDE_OUTCOME_APPROPRIATE && req->outcome() != v1::OVERRIDE_OUTCOME_INAPPROPRIATE) {
    return FinishNow(ctx, InvalidArgument(reason::kReviewOutcomeInvalid, "outcome: appropriate or inappropriate"));
  }
  if (absl::StripAsciiWhitespace(req->note()).empty() || req->note().size() > kMaxNote) {
    return FinishNow(ctx, InvalidArgument(reason::kReviewNoteInvalid,
                                       "a note is required (1 to 4096 bytes): why the override was or was not appropriate"));
  }
  auto* reactor = ctx->DefaultReactor();
  const uint64_t index = req->override_index();
  d_.store.ReadAudit(AuditRead{index, 1, "", false}, [this, reactor, req, resp, index, who = *std::move(id)](
                                                         absl::StatusOr<std::vector<AuditRow>> rows) {
    if (!rows.ok()) {
      reactor->Finish(ToGrpcStatus(rows.status()));
      return;
    }
    v1::AuditEntry o;
    if (rows->empty() || (*rows)[0].index != index || !o.ParseFromString((*rows)[0].entry) ||
        !audit::IsOverride(o)) {
      reactor->Finish(ToGrpcStatus(Error(absl::StatusCode::kNotFound, reason::kOverrideNotFound,
                                         absl::StrCat("audit entry ", index, " is not a safeguarding override"))));
      return;
    }
    // The review carries the override's parties, person and agreement, so
    // a search by person or organisation finds both.
    v1::AuditEntry e;
    *e.mutable_at() = ToTimestamp(d_.clock.Now());
    e.set_event(v1::AUDIT_EVENT_OVERRIDE_REVIEWED);
    e.set_actor(who.org.str());
    e.set_actor_role("ig-officer");
    e.set_message_id(o.message_id());
    e.set_sender(o.sender());
    e.set_recipient(o.recipient());
    e.set_workflow(o.workflow());
    e.set_purpose(o.purpose());
    e.set_subject(o.subject());
    e.set_agreement_id(o.agreement_id());
    e.set_agreement_version(o.agreement_version());
    e.set_flow(o.flow());
    e.add_reasons(req->outcome() == v1::OVERRIDE_OUTCOME_APPROPRIATE ? "APPROPRIATE" : "INAPPROPRIATE");
    e.set_justification(req->note());
    e.set_override_index(index);
    resp->set_message_id(o.message_id());
    std::vector<AuditRecord> records;
    records.push_back(d_.audit.entries().Make(std::move(e)));
    d_.store.AppendAudit(std::move(records), [reactor, resp](absl::StatusOr<uint64_t> at) {
      if (!at.ok()) {
        reactor->Finish(ToGrpcStatus(Error(absl::StatusCode::kUnavailable, reason::kAuditUnavailable,
                                           "the audit log cannot record the review; nothing was recorded")));
        return;
      }
      resp->set_review_index(*at);
      reactor->Finish(grpc::Status::OK);
    });
  });
  return reactor;
}

}  // namespace carebroker
