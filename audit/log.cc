#include "audit/log.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>

#include <future>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/time.h"
#include "core/files.h"
#include "core/status.h"
#include "core/reasons.h"
#include "broker/store/store_sync.h"

namespace carebroker::audit {

EntryMaker::EntryMaker(std::string subject_key) {
  // The key is set once; each Subject() copies this context (OpenSSL 3's
  // one-shot HMAC() looks the algorithms up on every call, which costs
  // more than the MAC).
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  hmac_.reset(mac ? EVP_MAC_CTX_new(mac) : nullptr, EVP_MAC_CTX_free);
  EVP_MAC_free(mac);
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                               OSSL_PARAM_construct_end()};
  if (!hmac_ || EVP_MAC_init(hmac_.get(), reinterpret_cast<const unsigned char*>(subject_key.data()),
                             subject_key.size(), params) != 1) {
    std::abort();  // HMAC-SHA256 is part of every OpenSSL 3 build: only memory can fail
  }
}

std::string EntryMaker::Subject(absl::string_view nhs_number) const {
  if (nhs_number.empty()) return "";
  const std::unique_ptr<EVP_MAC_CTX, decltype(&EVP_MAC_CTX_free)> ctx(EVP_MAC_CTX_dup(hmac_.get()), EVP_MAC_CTX_free);
  unsigned char mac[32];
  size_t len = 0;
  if (!ctx || EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>(nhs_number.data()), nhs_number.size()) != 1 ||
      EVP_MAC_final(ctx.get(), mac, &len, sizeof mac) != 1 || len != sizeof mac) {
    std::abort();  // out of memory
  }
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(mac), len));
}

AuditRecord EntryMaker::Make(v1::AuditEntry entry, absl::string_view nhs_number) const {
  entry.clear_index();
  if (!nhs_number.empty()) entry.set_subject(Subject(nhs_number));  // else as given (a review: the override's)
  AuditRecord r;
  r.subject = entry.subject();
  r.at = FromTimestamp(entry.at());
  r.entry = Canonical(entry);
  return r;
}

AuditRecord EntryMaker::Record(const MessageEvent& e) const {
  v1::AuditEntry a;
  *a.mutable_at() = ToTimestamp(e.at);
  a.set_event(e.event);
  // The recipient acted in a delivery, an ack and a rejection (a hold with its code).
  const bool by_recipient = e.event == v1::AUDIT_EVENT_DELIVERED || e.event == v1::AUDIT_EVENT_ACKNOWLEDGED ||
                            (e.event == v1::AUDIT_EVENT_HELD && !e.code.empty());
  a.set_actor(!e.actor.empty() ? e.actor : by_recipient ? e.recipient.str() : "broker");
  if (!e.actor.empty()) {
    a.set_actor_role("operator");
    a.set_justification(e.justification);
  }
  a.set_message_id(e.id.str());
  a.set_sender(e.sender.str());
  a.set_recipient(e.recipient.str());
  a.set_workflow(e.workflow);
  a.set_purpose(e.purpose);
  a.set_delivery_count(e.delivery_count);
  if (!e.reason.empty()) a.add_reasons(e.reason);
  if (!e.code.empty()) a.add_reasons(e.code);
  a.set_detail(e.detail);
  return Make(std::move(a), e.nhs_number);
}

AuditLog::AuditLog(const AuditOptions& options, carebroker::Store& store, const Clock& clock, Key key)
    : store_(store),
      clock_(clock),
      key_(std::move(key)),
      entries_(options.subject_key),
      every_(options.tree_head_every),
      interval_(options.tree_head_interval) {}

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(const AuditOptions& options, carebroker::Store& store,
                                                         const Clock& clock) {
  auto key = Key::FromPem(options.signing_key_pem, "audit.signing_key");
  if (!key.ok()) return Error(absl::StatusCode::kInvalidArgument, reason::kConfigInvalid, key.status().message());
  if (!key->can_sign()) {
    return Error(absl::StatusCode::kInvalidArgument, reason::kConfigInvalid,
                 "audit.signing_key: a private key is needed to sign tree heads");
  }
  std::unique_ptr<AuditLog> log(new AuditLog(options, store, clock, *std::move(key)));
  {
    absl::MutexLock l(&log->mu_);
    // Heads first: on a shared store another replica may sign while the
    // entries are read, and a head only ever covers entries already stored.
    auto heads = ReadTreeHeadsSync(store);
    if (!heads.ok()) return heads.status();
    for (uint64_t from = 0;;) {
      auto rows = ReadAuditSync(store, AuditRead{from, 100000, "", true});
      if (!rows.ok()) return rows.status();
      for (const AuditRow& r : *rows) {
        Hash h;
        if (r.index != log->tree_.size() || !HashFromBytes(r.leaf_hash, &h)) {
          return Error(absl::StatusCode::kDataLoss, reason::kAuditLogDamaged,
                       absl::StrCat("audit log: entry ", log->tree_.size(), " is missing or damaged; run "
                                    "carebroker-audit verify"));
        }
        log->tree_.Append(h);
      }
      if (rows->size() < 100000) break;
      from = log->tree_.size();
    }
    if (!heads->empty()) {
      const v1::SignedTreeHead& last = heads->back();
      Hash root;
      if (auto s = CheckTreeHead(log->key_, last); !s.ok()) {
        return Error(absl::StatusCode::kDataLoss, reason::kAuditLogDamaged, absl::StrCat("audit log: ", s.message()));
      }
      if (last.tree_size() > log->tree_.size() || !HashFromBytes(last.root_hash(), &root) ||
          log->tree_.Root(last.tree_size()) != root) {
        return Error(absl::StatusCode::kDataLoss, reason::kAuditLogDamaged,
                     absl::StrCat("audit log: the stored entries do not match the tree head signed at size ",
                                  last.tree_size(), "; run carebroker-audit verify"));
      }
      log->latest_ = last;
      log->signed_size_ = last.tree_size();
    }
    log->signed_at_ = clock.Now();
  }
  AuditLog* raw = log.get();
  store.SetAuditRecorder(&raw->entries_);
  store.SetAuditListener([raw](uint64_t first, const std::vector<std::string>& leaves) { raw->OnDurable(first, leaves); });
  return log;
}

bool AuditLog::healthy() const {
  absl::MutexLock l(&mu_);
  return healthy_;
}

uint64_t AuditLog::size() const {
  absl::MutexLock l(&mu_);
  return tree_.size();
}

v1::SignedTreeHead AuditLog::LatestHead() const {
  absl::MutexLock l(&mu_);
  return latest_;
}

void AuditLog::OnDurable(uint64_t first, const std::vector<std::string>& leaves) {
  std::vector<v1::SignedTreeHead> heads;  // one per `every_` entries, even within one commit
  {
    absl::MutexLock l(&mu_);
    if (!healthy_ || first > tree_.size()) {
      healthy_ = false;  // an entry is durable that the tree does not hold: fail closed
      return;
    }
    // On a shared store the tree read at start may already hold the first
    // of these (another replica's): they must be the same leaves.
    for (uint64_t i = first; i < tree_.size() && i - first < leaves.size(); ++i) {
      Hash h;
      if (!HashFromBytes(leaves[i - first], &h) || tree_.leaf(i) != h) {
        healthy_ = false;
        return;
      }
    }
    for (size_t i = tree_.size() - first; i < leaves.size(); ++i) {
      const std::string& leaf = leaves[i];
      Hash h;
      HashFromBytes(leaf, &h);
      tree_.Append(h);
      if (tree_.size() - signed_size_ >= every_) heads.push_back(*SignLocked());
    }
  }
  for (v1::SignedTreeHead& head : heads) Persist(std::move(head), [](absl::Status) {});
}

std::optional<v1::SignedTreeHead> AuditLog::SignLocked() {
  if (tree_.size() == signed_size_) return std::nullopt;
  signed_size_ = tree_.size();
  signed_at_ = clock_.Now();
  return SignTreeHead(key_, tree_.size(), signed_at_, tree_.Root());
}

void AuditLog::Persist(v1::SignedTreeHead head, absl::AnyInvocable<void(absl::Status) &&> done) {
  store_.AppendTreeHead(head, [this, head, done = std::move(done)](absl::StatusOr<bool> r) mutable {
    if (r.ok()) {
      absl::MutexLock l(&mu_);
      if (head.tree_size() > latest_.tree_size()) latest_ = head;
    }
    std::move(done)(r.status());
  });
}

void AuditLog::RecordRefusal(v1::AuditEntry entry, v1::AuditEvent event) {
  const absl::Time now = clock_.Now();
  {
    absl::MutexLock l(&refusal_mu_);
    RefusalWindow& w = event == v1::AUDIT_EVENT_SEND_REFUSED ? send_refusals_ : certificate_refusals_;
    if (now - w.start >= absl::Minutes(1)) {
      w.start = now;
      w.recorded = 0;
    }
    if (w.recorded >= kRefusalsPerMinute) {
      ++w.unrecorded;
      return;
    }
    ++w.recorded;
    if (w.unrecorded > 0) {
      entry.set_detail(absl::StrCat(entry.detail(), "; ", w.unrecorded,
                                    " earlier refusals were counted but not recorded one by one"));
      w.unrecorded = 0;
    }
  }
  *entry.mutable_at() = ToTimestamp(now);
  entry.set_event(event);
  store_.AppendAudit({entries_.Make(std::move(entry))}, [](absl::StatusOr<uint64_t>) {});
}

void AuditLog::Tick() {
  std::optional<v1::SignedTreeHead> head;
  {
    absl::MutexLock l(&mu_);
    if (clock_.Now() - signed_at_ >= interval_) head = SignLocked();
  }
  if (head) Persist(*std::move(head), [](absl::Status) {});
}

absl::Status AuditLog::SignNow() {
  std::optional<v1::SignedTreeHead> head;
  {
    absl::MutexLock l(&mu_);
    head = SignLocked();
  }
  if (!head) return absl::OkStatus();
  std::promise<absl::Status> p;
  Persist(*std::move(head), [&p](absl::Status s) { p.set_value(std::move(s)); });
  return p.get_future().get();
}

absl::StatusOr<v1::InclusionProof> AuditLog::ProveInclusion(uint64_t index, uint64_t tree_size) const {
  absl::MutexLock l(&mu_);
  if (tree_size == 0) tree_size = latest_.tree_size();
  if (tree_size > tree_.size() || index >= tree_size) {
    return InvalidArgument(reason::kProofOutOfRange, absl::StrCat("entry ", index, " is not in a tree of size ", tree_size,
                                                              " (the log holds ", tree_.size(), " entries)"));
  }
  v1::InclusionProof p;
  p.set_index(index);
  p.set_tree_size(tree_size);
  p.set_leaf_hash(std::string(AsBytes(tree_.leaf(index))));
  for (const Hash& h : tree_.InclusionProof(index, tree_size)) p.add_path(std::string(AsBytes(h)));
  return p;
}

absl::StatusOr<v1::ConsistencyProof> AuditLog::ProveConsistency(uint64_t first, uint64_t second) const {
  absl::MutexLock l(&mu_);
  if (first > second || second > tree_.size()) {
    return InvalidArgument(reason::kProofOutOfRange, absl::StrCat("no consistency proof from ", first, " to ", second,
                                                              " (the log holds ", tree_.size(), " entries)"));
  }
  v1::ConsistencyProof p;
  p.set_first(first);
  p.set_second(second);
  for (const Hash& h : tree_.ConsistencyProof(first, second)) p.add_path(std::string(AsBytes(h)));
  return p;
}

}  // namespace carebroker::audit
