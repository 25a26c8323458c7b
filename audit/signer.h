// Ed25519 signatures over tree heads (OpenSSL). The broker holds the
// private key; officers verify with the public key alone.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "audit/merkle.h"
#include "carebroker/v1/audit.pb.h"

typedef struct evp_pkey_st EVP_PKEY;

namespace carebroker::audit {

class Key {
 public:
  // A PEM private key (signs and verifies) or public key (verifies), Ed25519 only.
  static absl::StatusOr<Key> FromPem(absl::string_view pem, absl::string_view what);
  static absl::StatusOr<Key> LoadFile(const std::string& path);

  bool can_sign() const { return private_; }
  // Hex SHA-256 of the raw 32-byte public key.
  const std::string& key_id() const { return key_id_; }
  // The public key, PEM (SubjectPublicKeyInfo).
  std::string PublicPem() const;

  std::string Sign(absl::string_view message) const;  // 64 bytes; requires can_sign()
  bool Verify(absl::string_view message, absl::string_view signature) const;

 private:
  std::shared_ptr<EVP_PKEY> pkey_;
  bool private_ = false;
  std::string key_id_;
};

// The bytes a tree head's signature covers (see audit.proto).
std::string TreeHeadMessage(uint64_t tree_size, absl::Time timestamp, const Hash& root);

v1::SignedTreeHead SignTreeHead(const Key& key, uint64_t tree_size, absl::Time timestamp, const Hash& root);

// OK when the head is well formed, names this key and its signature holds.
absl::Status CheckTreeHead(const Key& key, const v1::SignedTreeHead& head);

}  // namespace carebroker::audit
