// SHA-256, the one hash of the project: idempotency digests, the policy set
// digest, key ids, the audit log's RFC 9162 tree (audit/merkle.h builds its
// leaf and node hashes on Sha256Parts) and the subject Bloom blocks.
// Thread-safe; aborts only if OpenSSL cannot allocate.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "absl/strings/string_view.h"

typedef struct evp_md_ctx_st EVP_MD_CTX;

namespace carebroker {

using Sha256Digest = std::array<uint8_t, 32>;

// SHA-256 of the concatenation of `parts`.
Sha256Digest Sha256Parts(std::initializer_list<absl::string_view> parts);
inline Sha256Digest Sha256Of(absl::string_view data) { return Sha256Parts({data}); }

// SHA-256 of `data` as 32 raw bytes.
std::string Sha256(absl::string_view data);

// SHA-256 of data given in pieces (a chunked message's chunks, one at a
// time): Update, then Finish once (32 raw bytes).
class Sha256Stream {
 public:
  Sha256Stream();
  ~Sha256Stream();
  Sha256Stream(const Sha256Stream&) = delete;
  Sha256Stream& operator=(const Sha256Stream&) = delete;
  void Update(absl::string_view data);
  std::string Finish();

 private:
  EVP_MD_CTX* ctx_;
};

// Lower-case hex HMAC-SHA256 of `data` under `key` (pseudonyms, MESH tokens).
std::string HmacSha256Hex(absl::string_view key, absl::string_view data);

}  // namespace carebroker
