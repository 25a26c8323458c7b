#include "broker/mesh/auth.h"

#include <openssl/crypto.h>

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/civil_time.h"
#include "core/reasons.h"
#include "core/sha256.h"
#include "core/status.h"

namespace carebroker::mesh {
namespace {

constexpr absl::string_view kScheme = "NHSMESH ";

absl::Status Invalid(absl::string_view what) {
  return Error(absl::StatusCode::kPermissionDenied, reason::kMeshTokenInvalid,
               absl::StrCat("the NHSMESH Authorization token ", what));
}

bool AllOf(absl::string_view s, bool (*pred)(unsigned char)) {
  for (char c : s) {
    if (!pred(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

bool IsDigit(unsigned char c) { return absl::ascii_isdigit(c); }
bool IsHex(unsigned char c) { return absl::ascii_isxdigit(c); }
bool IsMailboxChar(unsigned char c) { return absl::ascii_isalnum(c); }
bool IsNonceChar(unsigned char c) { return absl::ascii_isalnum(c) || c == '-'; }

}  // namespace

absl::StatusOr<Token> ParseToken(absl::string_view authorization) {
  if (!absl::StartsWith(authorization, kScheme)) return Invalid("is missing: expected the NHSMESH scheme");
  std::vector<std::string> parts = absl::StrSplit(authorization.substr(kScheme.size()), ':');
  if (parts.size() != 5) return Invalid("does not have five colon-separated fields");
  Token t{parts[0], parts[1], parts[2], parts[3], parts[4], absl::InfinitePast()};
  if (t.mailbox.empty() || t.mailbox.size() > 100 || !AllOf(t.mailbox, IsMailboxChar)) {
    return Invalid("has a malformed mailbox id");
  }
  if (t.nonce.empty() || t.nonce.size() > 100 || !AllOf(t.nonce, IsNonceChar)) return Invalid("has a malformed nonce");
  if (t.nonce_count.empty() || t.nonce_count.size() > 10 || !AllOf(t.nonce_count, IsDigit)) {
    return Invalid("has a nonce count that is not a number");
  }
  if (t.timestamp.size() != 12 || !AllOf(t.timestamp, IsDigit)) return Invalid("has a timestamp that is not yyyyMMddHHmm");
  // (absl::ParseTime's %Y would take every digit as the year.)
  auto field = [&](size_t at, size_t n) { return std::stoi(t.timestamp.substr(at, n)); };
  const int year = field(0, 4), month = field(4, 2), day = field(6, 2), hour = field(8, 2), minute = field(10, 2);
  const absl::CivilMinute civil(year, month, day, hour, minute);
  if (civil.year() != year || civil.month() != month || civil.day() != day || civil.hour() != hour ||
      civil.minute() != minute) {
    return Invalid("has a timestamp that is not a time (yyyyMMddHHmm)");
  }
  t.time = absl::FromCivil(civil, absl::UTCTimeZone());
  if (t.hmac.size() != 64 || !AllOf(t.hmac, IsHex)) return Invalid("has a hash that is not 64 hex digits");
  return t;
}

std::string TokenHmac(absl::string_view shared_secret, absl::string_view mailbox, absl::string_view nonce,
                      absl::string_view nonce_count, absl::string_view password, absl::string_view timestamp) {
  return HmacSha256Hex(shared_secret, absl::StrJoin({mailbox, nonce, nonce_count, password, timestamp}, ":"));
}

absl::StatusOr<AcceptedToken> CheckToken(absl::string_view authorization, absl::string_view mailbox,
                                         absl::string_view shared_secret, absl::string_view password, absl::Time now) {
  absl::StatusOr<Token> t = ParseToken(authorization);
  if (!t.ok()) return t.status();
  if (t->mailbox != mailbox) {
    return Error(absl::StatusCode::kPermissionDenied, reason::kMeshMailboxMismatch,
                 "the NHSMESH token is for another mailbox than the request's path");
  }
  const std::string want = TokenHmac(shared_secret, t->mailbox, t->nonce, t->nonce_count, password, t->timestamp);
  const std::string got = absl::AsciiStrToLower(t->hmac);
  if (CRYPTO_memcmp(want.data(), got.data(), want.size()) != 0) {
    return Invalid("does not match the mailbox's password and the shared secret");
  }
  if (absl::AbsDuration(now - t->time) > kTokenWindow) {
    return Error(absl::StatusCode::kPermissionDenied, reason::kMeshTokenStale,
                 "the NHSMESH token's timestamp is more than two hours from the broker's clock (UTC)");
  }
  return AcceptedToken{absl::StrCat(t->mailbox, ":", got), t->time + kTokenWindow};
}

absl::Status TokenReused() {
  return Error(absl::StatusCode::kPermissionDenied, reason::kMeshTokenReused,
               "the NHSMESH token was used before: each token is good for one request");
}

}  // namespace carebroker::mesh
