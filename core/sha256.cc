#include "core/sha256.h"

#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/escaping.h"

namespace carebroker {

// OpenSSL 3's one-shot SHA256() looks the algorithm up on every call, which
// costs more than hashing a tree node; the algorithm is fetched once and each
// thread reuses one context.
Sha256Digest Sha256Parts(std::initializer_list<absl::string_view> parts) {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  thread_local const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  Sha256Digest h;
  unsigned int n = 0;
  bool ok = md && ctx && EVP_DigestInit_ex(ctx.get(), md, nullptr) == 1;
  for (absl::string_view p : parts) ok = ok && EVP_DigestUpdate(ctx.get(), p.data(), p.size()) == 1;
  if (!ok || EVP_DigestFinal_ex(ctx.get(), h.data(), &n) != 1 || n != h.size()) std::abort();  // out of memory
  return h;
}

Sha256Stream::Sha256Stream() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) std::abort();  // out of memory
}

Sha256Stream::~Sha256Stream() { EVP_MD_CTX_free(ctx_); }

void Sha256Stream::Update(absl::string_view data) {
  if (EVP_DigestUpdate(ctx_, data.data(), data.size()) != 1) std::abort();
}

std::string Sha256Stream::Finish() {
  std::string out(32, '\0');
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(ctx_, reinterpret_cast<unsigned char*>(out.data()), &n) != 1 || n != 32) std::abort();
  return out;
}

std::string Sha256(absl::string_view data) {
  const Sha256Digest h = Sha256Of(data);
  return std::string(reinterpret_cast<const char*>(h.data()), h.size());
}

std::string HmacSha256Hex(absl::string_view key, absl::string_view data) {
  // As Sha256Parts: the one-shot HMAC() fetches HMAC and SHA-256 on every
  // call (most of a pseudonym's cost, one a row for a CLD submission). Each
  // thread keeps a context keyed with the last key it was given, and starts
  // it again (the same key) per call.
  static EVP_MAC* const mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  struct Keyed {
    std::string key;
    EVP_MAC_CTX* ctx = nullptr;
    ~Keyed() { EVP_MAC_CTX_free(ctx); }
  };
  thread_local Keyed keyed;
  if (mac == nullptr) std::abort();
  bool ok;
  if (keyed.ctx == nullptr || keyed.key != key) {
    EVP_MAC_CTX_free(keyed.ctx);
    keyed.ctx = EVP_MAC_CTX_new(mac);
    keyed.key.assign(key.data(), key.size());
    char digest[] = "SHA256";
    const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0), OSSL_PARAM_construct_end()};
    static const unsigned char kEmpty = 0;  // an empty key is a key, not "the previous one"
    ok = keyed.ctx != nullptr &&
         EVP_MAC_init(keyed.ctx, key.empty() ? &kEmpty : reinterpret_cast<const unsigned char*>(key.data()),
                      key.size(), params) == 1;
  } else {
    ok = EVP_MAC_init(keyed.ctx, nullptr, 0, nullptr) == 1;  // the key set before
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  size_t len = 0;
  ok = ok && EVP_MAC_update(keyed.ctx, reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1 &&
       EVP_MAC_final(keyed.ctx, out, &len, sizeof out) == 1;
  if (!ok) {
    EVP_MAC_CTX_free(keyed.ctx);
    keyed.ctx = nullptr;
    std::abort();  // out of memory
  }
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(out), len));
}

}  // namespace carebroker
