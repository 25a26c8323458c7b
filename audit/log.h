// The broker's side of the audit log.
//
// EntryMaker turns decisions into entries: the person becomes a keyed hash
// of the NHS number (HMAC-SHA256 under the audit subject key), and the
// entry is serialised deterministically. It is also the store's recorder
// of deliveries, acks, expiry and withholding.
//
// AuditLog keeps the Merkle tree of every durable entry (rebuilt from the
// store's leaf hashes at start, then fed by the store in commit order),
// signs tree heads every N entries or T seconds and at shutdown, and
// answers proofs. It refuses to start when the stored log does not match
// its own latest signed tree head.
#pragma once

#include "core/canonical.h"

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "audit/merkle.h"
#include "audit/signer.h"
#include "broker/store/store.h"
#include "core/clock.h"
#include "carebroker/v1/audit.pb.h"

typedef struct evp_mac_ctx_st EVP_MAC_CTX;

namespace carebroker::audit {

class EntryMaker final : public AuditRecorder {
 public:
  explicit EntryMaker(std::string subject_key);

  // Lower-case hex HMAC-SHA256 of the NHS number; "" for "".
  std::string Subject(absl::string_view nhs_number) const;

  // `entry` with its subject set from `nhs_number` (when given; else the
  // subject it holds), serialised deterministically. Its index must be
  // unset (the store assigns it).
  AuditRecord Make(v1::AuditEntry entry, absl::string_view nhs_number = "") const;

  AuditRecord Record(const MessageEvent& e) const override;

 private:
  std::shared_ptr<EVP_MAC_CTX> hmac_;  // keyed; copied for each MAC
};

// Deterministic serialisation of an entry or a filter (core/canonical.h).
using ::carebroker::Canonical;

// What the audit log needs from the broker's config (audit: section).
struct AuditOptions {
  std::string signing_key_pem;  // Ed25519 private key that signs tree heads
  std::string subject_key;      // HMAC key of entry subjects
  uint32_t tree_head_every = 0;              // sign after this many entries (0: default)
  absl::Duration tree_head_interval;         // and at least this often
};

class AuditLog {
 public:
  // Loads the signing key, rebuilds the tree from `store` and checks the
  // latest stored tree head against it (signature and root); then takes
  // the store's new entries as they become durable. `store` must outlive it.
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(const AuditOptions& options, Store& store,
                                                        const Clock& clock);

  const EntryMaker& entries() const { return entries_; }
  const Key& key() const { return key_; }

  // False once an entry became durable that the tree could not take (a gap
  // in indexes): every send is then refused until restart.
  bool healthy() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t size() const ABSL_LOCKS_EXCLUDED(mu_);

  // The latest durable signed tree head (tree_size 0 before the first).
  v1::SignedTreeHead LatestHead() const ABSL_LOCKS_EXCLUDED(mu_);

  // tree_size 0: the latest signed head's size.
  absl::StatusOr<v1::InclusionProof> ProveInclusion(uint64_t index, uint64_t tree_size) const
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<v1::ConsistencyProof> ProveConsistency(uint64_t first, uint64_t second) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // Records a refusal as an entry of `event`, CERTIFICATE_REFUSED (a
  // refused caller) or SEND_REFUSED (a refused send): `entry` with actor,
  // role, reason and detail; the time is set here. Without waiting. A
  // flood cannot fill the disk: at most kRefusalsPerMinute of each event
  // are recorded one by one in a minute; the rest are counted, and the next
  // recorded refusal of that event says how many went unrecorded.
  static constexpr int kRefusalsPerMinute = 600;
  void RecordRefusal(v1::AuditEntry entry, v1::AuditEvent event = v1::AUDIT_EVENT_CERTIFICATE_REFUSED)
      ABSL_LOCKS_EXCLUDED(refusal_mu_);

  // Signs a head if entries were added since the last and `interval` has
  // passed (called by the broker's timer).
  void Tick() ABSL_LOCKS_EXCLUDED(mu_);
  // Signs a head for every entry now in the tree and waits until it is
  // stored (shutdown). OK when there is nothing new.
  absl::Status SignNow() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  AuditLog(const AuditOptions& options, carebroker::Store& store, const Clock& clock, Key key);
  void OnDurable(uint64_t first, const std::vector<std::string>& leaves) ABSL_LOCKS_EXCLUDED(mu_);
  // Signs the current tree and stores the head; the head becomes the
  // latest once stored. Null when there is nothing new to sign.
  std::optional<v1::SignedTreeHead> SignLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Persist(v1::SignedTreeHead head, absl::AnyInvocable<void(absl::Status) &&> done);

  carebroker::Store& store_;
  const Clock& clock_;
  Key key_;
  EntryMaker entries_;
  const uint64_t every_;
  const absl::Duration interval_;

  mutable absl::Mutex mu_;
  MerkleTree tree_ ABSL_GUARDED_BY(mu_);
  bool healthy_ ABSL_GUARDED_BY(mu_) = true;
  uint64_t signed_size_ ABSL_GUARDED_BY(mu_) = 0;  // size of the last head signed (maybe not yet stored)
  absl::Time signed_at_ ABSL_GUARDED_BY(mu_);
  v1::SignedTreeHead latest_ ABSL_GUARDED_BY(mu_);  // latest stored

  // One minute's window of refusals of one event.
  struct RefusalWindow {
    absl::Time start = absl::InfinitePast();
    int recorded = 0;
    uint64_t unrecorded = 0;
  };
  absl::Mutex refusal_mu_;
  RefusalWindow certificate_refusals_ ABSL_GUARDED_BY(refusal_mu_);
  RefusalWindow send_refusals_ ABSL_GUARDED_BY(refusal_mu_);
};

}  // namespace carebroker::audit
