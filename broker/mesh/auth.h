// MESH's Authorization token (MESH.md 1.3), checked on top of mutual TLS:
//
//   Authorization: NHSMESH <mailbox>:<nonce>:<nonce_count>:<yyyyMMddHHmm>:<hmac>
//
// where <hmac> is the hex HMAC-SHA256, keyed with the environment's shared
// secret, of "<mailbox>:<nonce>:<nonce_count>:<mailbox password>:<timestamp>".
// A token is good for one request only, and only within two hours of the
// broker's clock (UTC). Refusals are PERMISSION_DENIED (MESH answers 403)
// with a reason code; no error ever quotes the token, the password or the
// secret.
#pragma once

#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace carebroker::mesh {

struct Token {
  std::string mailbox;      // as sent (MESH requires upper case)
  std::string nonce;
  std::string nonce_count;  // decimal digits
  std::string timestamp;    // yyyyMMddHHmm, UTC
  std::string hmac;         // hex, either case
  absl::Time time;          // the timestamp, parsed
};

// Parses an Authorization header value. MESH_TOKEN_INVALID when it is not
// "NHSMESH " and five well-formed fields.
absl::StatusOr<Token> ParseToken(absl::string_view authorization);

// The lower-case hex HMAC a client computes (what a MESH client library does).
std::string TokenHmac(absl::string_view shared_secret, absl::string_view mailbox, absl::string_view nonce,
                      absl::string_view nonce_count, absl::string_view password, absl::string_view timestamp);

// Checks tokens and remembers each one it accepts until it could no longer
// be accepted anyway (two hours past its timestamp). One per listener; the
// tokens it remembers are this process's (replicas sharing PostgreSQL do
// not yet share them).
class TokenVerifier {
 public:
  static constexpr absl::Duration kWindow = absl::Hours(2);
  static constexpr size_t kMaxRemembered = 1 << 20;

  // OK when `authorization` is a token for `mailbox` (the mailbox in the
  // request's path), made with `shared_secret` and `password`, within
  // kWindow of `now`, and never accepted before. Reasons:
  // MESH_TOKEN_INVALID (malformed, or the HMAC does not match),
  // MESH_MAILBOX_MISMATCH, MESH_TOKEN_STALE, MESH_TOKEN_REUSED; and
  // RESOURCE_EXHAUSTED when kMaxRemembered tokens are in their window.
  absl::Status Verify(absl::string_view authorization, absl::string_view mailbox, absl::string_view shared_secret,
                      absl::string_view password, absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, absl::Time> seen_ ABSL_GUARDED_BY(mu_);  // token -> when to forget it
  absl::Time next_prune_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace carebroker::mesh
