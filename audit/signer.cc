#include "audit/signer.h"

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "absl/strings/str_cat.h"
#include "core/time.h"
#include "core/files.h"

namespace carebroker::audit {
namespace {

std::string RawPublic(EVP_PKEY* k) {
  std::string raw(32, '\0');
  size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(k, reinterpret_cast<unsigned char*>(raw.data()), &len) != 1) return "";
  raw.resize(len);
  return raw;
}

void PutBigEndian(uint64_t v, std::string* out) {
  for (int i = 7; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace

absl::StatusOr<Key> Key::FromPem(absl::string_view pem, absl::string_view what) {
  Key key;
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  EVP_PKEY* k = nullptr;
  if (pem.find("PRIVATE KEY") != absl::string_view::npos) {
    k = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
    key.private_ = true;
  } else {
    k = PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr);
  }
  if (k == nullptr) return absl::InvalidArgumentError(absl::StrCat(what, ": not a PEM key"));
  key.pkey_.reset(k, EVP_PKEY_free);
  if (EVP_PKEY_get_id(k) != EVP_PKEY_ED25519) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": not an Ed25519 key"));
  }
  key.key_id_ = ToHex(Sha256Of(RawPublic(k)));
  return key;
}

absl::StatusOr<Key> Key::LoadFile(const std::string& path) {
  auto pem = ReadFileToString(path, "audit key file");
  if (!pem.ok()) return pem.status();
  return FromPem(*pem, path);
}

std::string Key::PublicPem() const {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  PEM_write_bio_PUBKEY(bio.get(), pkey_.get());
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string Key::Sign(absl::string_view message) const {
  std::string sig(64, '\0');
  size_t len = sig.size();
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!private_ || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, pkey_.get()) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1) {
    return "";
  }
  sig.resize(len);
  return sig;
}

bool Key::Verify(absl::string_view message, absl::string_view signature) const {
  if (signature.size() != 64) return false;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  return EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey_.get()) == 1 &&
         EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                          reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
}

std::string TreeHeadMessage(uint64_t tree_size, absl::Time timestamp, const Hash& root) {
  std::string m = "carebroker-tree-head-v1";
  m.push_back('\0');
  PutBigEndian(tree_size, &m);
  PutBigEndian(static_cast<uint64_t>(absl::ToUnixMillis(timestamp)), &m);
  m.append(reinterpret_cast<const char*>(root.data()), root.size());
  return m;
}

v1::SignedTreeHead SignTreeHead(const Key& key, uint64_t tree_size, absl::Time timestamp, const Hash& root) {
  // Milliseconds are what is signed; keep the stored time the same.
  timestamp = absl::FromUnixMillis(absl::ToUnixMillis(timestamp));
  v1::SignedTreeHead h;
  h.set_tree_size(tree_size);
  *h.mutable_timestamp() = ToTimestamp(timestamp);
  h.set_root_hash(std::string(AsBytes(root)));
  h.set_key_id(key.key_id());
  h.set_signature(key.Sign(TreeHeadMessage(tree_size, timestamp, root)));
  return h;
}

absl::Status CheckTreeHead(const Key& key, const v1::SignedTreeHead& head) {
  Hash root;
  if (!HashFromBytes(head.root_hash(), &root)) {
    return absl::DataLossError(absl::StrCat("tree head at size ", head.tree_size(), ": malformed root hash"));
  }
  if (head.key_id() != key.key_id()) {
    return absl::DataLossError(absl::StrCat("tree head at size ", head.tree_size(), ": signed by key ",
                                            head.key_id().substr(0, 16), "..., not by the key given (",
                                            key.key_id().substr(0, 16), "...)"));
  }
  if (!key.Verify(TreeHeadMessage(head.tree_size(), FromTimestamp(head.timestamp()), root), head.signature())) {
    return absl::DataLossError(absl::StrCat("tree head at size ", head.tree_size(), ": signature does not verify"));
  }
  return absl::OkStatus();
}

}  // namespace carebroker::audit
