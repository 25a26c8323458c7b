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

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
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

// A token that passed CheckToken: it may be used once. `key` names it (its
// mailbox and HMAC: the HMAC covers every other field), to be recorded
// until `forget_at`, two hours past its timestamp, after which it would be
// refused as stale anyway (Store::UseOnce keeps it for every replica).
struct AcceptedToken {
  std::string key;
  absl::Time forget_at;
};

inline constexpr absl::Duration kTokenWindow = absl::Hours(2);

// OK when `authorization` is a token for `mailbox` (the mailbox in the
// request's path), made with `shared_secret` and `password`, within
// kTokenWindow of `now`. Reasons: MESH_TOKEN_INVALID (malformed, or the HMAC
// does not match), MESH_MAILBOX_MISMATCH, MESH_TOKEN_STALE.
absl::StatusOr<AcceptedToken> CheckToken(absl::string_view authorization, absl::string_view mailbox,
                                         absl::string_view shared_secret, absl::string_view password, absl::Time now);

// The refusal of a token recorded before (MESH_TOKEN_REUSED).
absl::Status TokenReused();

}  // namespace carebroker::mesh
