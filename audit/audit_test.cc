#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sqlite3.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "audit/log.h"
#include "audit/query.h"
#include "audit/verify.h"
#include "core/files.h"
#include "broker/store/sqlite_store.h"
#include "broker/store/store_sync.h"

namespace carebroker::audit {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

Hash H(const std::string& hex) {
  Hash h;
  const std::string bytes = absl::HexStringToBytes(hex);
  EXPECT_TRUE(HashFromBytes(bytes, &h)) << hex;
  return h;
}

// RFC 6962 / Certificate Transparency reference data (also used by RFC 9162
// implementations): the leaves, and the root for every tree size 0..8.
const std::vector<std::string> kLeaves = {"",         "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                          "606162636465666768696a6b6c6d6e6f"};
const std::vector<std::string> kRoots = {
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"};

MerkleTree ReferenceTree() {
  MerkleTree t;
  for (const auto& l : kLeaves) t.Append(LeafHash(absl::HexStringToBytes(l)));
  return t;
}

TEST(Merkle, RootsMatchTheReferenceVectors) {
  MerkleTree t = ReferenceTree();
  for (uint64_t n = 0; n <= 8; ++n) EXPECT_EQ(ToHex(t.Root(n)), kRoots[n]) << "size " << n;
}

TEST(Merkle, InclusionProofsMatchTheReferenceVectors) {
  MerkleTree t = ReferenceTree();
  struct {
    uint64_t index, size;
    std::vector<std::string> path;
  } cases[] = {
      {0, 8,
       {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
      {5, 8,
       {"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
  };
  for (const auto& c : cases) {
    std::vector<std::string> got;
    for (const Hash& h : t.InclusionProof(c.index, c.size)) got.push_back(ToHex(h));
    EXPECT_EQ(got, c.path) << c.index << "/" << c.size;
    std::vector<Hash> path;
    for (const auto& p : c.path) path.push_back(H(p));
    EXPECT_TRUE(VerifyInclusion(t.leaf(c.index), c.index, c.size, path, H(kRoots[c.size])));
  }
}

TEST(Merkle, ConsistencyProofsMatchTheReferenceVectors) {
  MerkleTree t = ReferenceTree();
  struct {
    uint64_t first, second;
    std::vector<std::string> path;
  } cases[] = {
      {2, 8,
       {"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
      {6, 8,
       {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
      {2, 5,
       {"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"}},
  };
  for (const auto& c : cases) {
    std::vector<std::string> got;
    for (const Hash& h : t.ConsistencyProof(c.first, c.second)) got.push_back(ToHex(h));
    EXPECT_EQ(got, c.path) << c.first << "->" << c.second;
    std::vector<Hash> path;
    for (const auto& p : c.path) path.push_back(H(p));
    EXPECT_TRUE(VerifyConsistency(c.first, c.second, H(kRoots[c.first]), H(kRoots[c.second]), path));
  }
}

TEST(Merkle, EveryProofVerifiesAndNoMangledOneDoes) {
  MerkleTree t;
  for (int i = 0; i < 40; ++i) t.Append(LeafHash(absl::StrCat("entry ", i)));
  for (uint64_t n = 1; n <= 40; ++n) {
    const Hash root = t.Root(n);
    for (uint64_t i = 0; i < n; ++i) {
      auto p = t.InclusionProof(i, n);
      ASSERT_TRUE(VerifyInclusion(t.leaf(i), i, n, p, root)) << i << "/" << n;
      if (n > 1) {
        EXPECT_FALSE(VerifyInclusion(t.leaf(i), (i + 1) % n, n, p, root));
      }
      if (!p.empty()) {
        p.back()[0] ^= 1;
        EXPECT_FALSE(VerifyInclusion(t.leaf(i), i, n, p, root));
        p.pop_back();
        EXPECT_FALSE(VerifyInclusion(t.leaf(i), i, n, p, root));
      }
    }
    for (uint64_t m = 1; m < n; ++m) {
      auto p = t.ConsistencyProof(m, n);
      ASSERT_TRUE(VerifyConsistency(m, n, t.Root(m), root, p)) << m << "->" << n;
      EXPECT_FALSE(VerifyConsistency(m, n, t.Root(m - 1), root, p));
      p[0][5] ^= 0x80;
      EXPECT_FALSE(VerifyConsistency(m, n, t.Root(m), root, p));
    }
  }
  EXPECT_TRUE(VerifyConsistency(0, 5, EmptyRoot(), t.Root(5), {}));
  EXPECT_TRUE(VerifyConsistency(5, 5, t.Root(5), t.Root(5), {}));
  EXPECT_FALSE(VerifyConsistency(5, 4, t.Root(5), t.Root(4), {}));
}

// RFC 8032 section 7.1, TEST 1: the empty message.
TEST(Signer, Ed25519MatchesRfc8032) {
  const std::string secret =
      absl::HexStringToBytes("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
  EVP_PKEY* pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr,
                                                reinterpret_cast<const unsigned char*>(secret.data()), secret.size());
  ASSERT_NE(pkey, nullptr);
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, pkey, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  const std::string pem(data, n);
  BIO_free(bio);
  EVP_PKEY_free(pkey);
  auto key = Key::FromPem(pem, "test");
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(absl::BytesToHexString(key->Sign("")),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe"
            "24655141438e7a100b");
  EXPECT_EQ(key->key_id(),
            ToHex(Sha256Of(absl::HexStringToBytes("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"))));
  auto pub = Key::FromPem(key->PublicPem(), "pub");
  ASSERT_TRUE(pub.ok());
  EXPECT_FALSE(pub->can_sign());
  EXPECT_TRUE(pub->Verify("", key->Sign("")));
  EXPECT_FALSE(pub->Verify("x", key->Sign("")));
  EXPECT_FALSE(Key::FromPem("not a key", "k").ok());
}

TEST(Subjects, AreHmacSha256MatchingRfc4231) {
  // RFC 4231 test case 2 (key "Jefe"), and the same answer from every thread.
  const EntryMaker maker("Jefe");
  const std::string want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
  EXPECT_EQ(maker.Subject("what do ya want for nothing?"), want);
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) wrong += maker.Subject("what do ya want for nothing?") != want;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(maker.Subject(""), "");  // no person
  EXPECT_NE(EntryMaker("another key").Subject("9434765919"), maker.Subject("9434765919"));
}

// ---------------------------------------------------------------- the log

std::string Pki() {
  const char* p = std::getenv("CB_TEST_PKI");
  return p ? p : "/nonexistent";
}

class AuditLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / absl::StrCat("cb-audit-", ::getpid(), "-", counter_++);
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "agreements");
    // The audit section of a broker config, as the broker passes it.
    auto signing = ReadFileToString(Pki() + "/audit-signing.key", "signing key");
    auto subject = ReadFileToString(Pki() + "/audit-subject.key", "subject key");
    ASSERT_TRUE(signing.ok() && subject.ok()) << signing.status() << subject.status();
    options_ = {.signing_key_pem = *signing, .subject_key = *subject, .tree_head_every = 8,
                .tree_head_interval = absl::Seconds(60)};
    auto pub = Key::LoadFile(Pki() + "/audit-signing.pub");
    ASSERT_TRUE(pub.ok()) << pub.status();
    pub_ = std::make_unique<Key>(*std::move(pub));
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string db() const { return (dir_ / "audit.db").string(); }

  // Writes `n` entries (about two synthetic people) through a real store
  // and log, with tree heads every 8 entries and at the end.
  void Write(int n) {
    auto store = OpenSqliteStore(db());
    ASSERT_TRUE(store.ok()) << store.status();
    auto log = AuditLog::Open(options_, **store, clock_);
    ASSERT_TRUE(log.ok()) << log.status();
    for (int i = 0; i < n; ++i) {
      v1::AuditEntry e;
      e.mutable_at()->set_seconds(1'800'000'000 + i);
      e.set_event(i % 3 == 0 ? v1::AUDIT_EVENT_SEND_DENIED : v1::AUDIT_EVENT_SEND_ACCEPTED);
      e.set_sender("RR8");
      e.set_recipient("503");
      e.set_safeguarding_override(i == 4);
      ASSERT_TRUE(AppendAuditSync(**store, {(*log)->entries().Make(e, i % 2 ? "9434765919" : "9434765870")}).ok());
    }
    ASSERT_TRUE((*log)->SignNow().ok());
    (*store)->Close();
  }

  // Runs SQL against the (closed) store file.
  void Tamper(const std::string& sql) {
    sqlite3* h = nullptr;
    ASSERT_EQ(sqlite3_open(db().c_str(), &h), SQLITE_OK);
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(h, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
    sqlite3_free(err);
    sqlite3_close(h);
  }

  VerifyReport Check() {
    auto log = ReadStoreFile(db());
    EXPECT_TRUE(log.ok()) << log.status();
    return log.ok() ? Verify(*log, *pub_) : VerifyReport{};
  }

  static inline int counter_ = 0;
  fs::path dir_;
  AuditOptions options_;
  std::unique_ptr<Key> pub_;
  SystemClock clock_;
};

TEST_F(AuditLogTest, AnIntactLogVerifiesAndReopens) {
  Write(20);
  VerifyReport r = Check();
  EXPECT_TRUE(r.intact) << r.problem;
  EXPECT_EQ(r.entries, 20u);
  EXPECT_EQ(r.covered, 20u);
  EXPECT_GE(r.heads, 3u);  // at 8, 16 and at the end
  // Indexes are consecutive from 0 and inside the hashed bytes.
  auto copy = ReadStoreFile(db());
  v1::AuditEntry e;
  ASSERT_TRUE(e.ParseFromString(copy->entries[13].entry()));
  EXPECT_EQ(e.index(), 13u);
  EXPECT_EQ(e.subject(), EntryMaker(*ReadFileToString(Pki() + "/audit-subject.key", "k")).Subject("9434765919"));
  EXPECT_EQ(e.subject().find("9434765919"), std::string::npos);
  Write(3);  // reopening rebuilds the tree and goes on
  EXPECT_TRUE(Check().intact);
  EXPECT_EQ(Check().entries, 23u);
}

TEST_F(AuditLogTest, AHeadIsSignedEveryNEntriesEvenWithinOneCommit) {
  {
    auto store = OpenSqliteStore(db());
    ASSERT_TRUE(store.ok()) << store.status();
    auto log = AuditLog::Open(options_, **store, clock_);
    ASSERT_TRUE(log.ok()) << log.status();
    std::vector<AuditRecord> batch;
    for (int i = 0; i < 20; ++i) {
      v1::AuditEntry e;
      e.set_event(v1::AUDIT_EVENT_SEND_ACCEPTED);
      batch.push_back((*log)->entries().Make(e, "9434765919"));
    }
    ASSERT_TRUE(AppendAuditSync(**store, std::move(batch)).ok());
    ASSERT_TRUE((*log)->SignNow().ok());
    auto heads = ReadTreeHeadsSync(**store);
    ASSERT_TRUE(heads.ok()) << heads.status();
    std::vector<uint64_t> sizes;
    for (const auto& h : *heads) sizes.push_back(h.tree_size());
    EXPECT_EQ(sizes, (std::vector<uint64_t>{8, 16, 20}));
    (*store)->Close();
  }
  VerifyReport r = Check();
  EXPECT_TRUE(r.intact) << r.problem;
  EXPECT_EQ(r.heads, 3u);
}

TEST_F(AuditLogTest, RefusalFloodsAreCountedNotEachRecorded) {
  auto store = OpenSqliteStore(db());
  ASSERT_TRUE(store.ok()) << store.status();
  FakeClock clock(absl::FromUnixSeconds(1'800'000'000));
  auto log = AuditLog::Open(options_, **store, clock);
  ASSERT_TRUE(log.ok()) << log.status();
  auto refuse = [&] {
    v1::AuditEntry e;
    e.add_reasons("CERTIFICATE_EXPIRED");
    e.set_detail("TLS handshake refused");
    (*log)->RecordRefusal(std::move(e));
  };
  for (int i = 0; i < AuditLog::kRefusalsPerMinute + 5; ++i) refuse();
  // Refused sends have a window of their own: a certificate flood does not
  // silence them.
  v1::AuditEntry send;
  send.add_reasons("HL7_INVALID");
  (*log)->RecordRefusal(send, v1::AUDIT_EVENT_SEND_REFUSED);
  clock.Advance(absl::Minutes(1));
  refuse();
  // An append after them completes only once they are durable too.
  v1::AuditEntry marker;
  marker.set_event(v1::AUDIT_EVENT_AUDIT_QUERY);
  ASSERT_TRUE(AppendAuditSync(**store, {(*log)->entries().Make(marker)}).ok());
  auto rows = ReadAuditSync(**store, {.from = 0, .max = 100000});
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), static_cast<size_t>(AuditLog::kRefusalsPerMinute + 3));
  v1::AuditEntry refused_send;
  ASSERT_TRUE(refused_send.ParseFromString((*rows)[AuditLog::kRefusalsPerMinute].entry));
  EXPECT_EQ(refused_send.event(), v1::AUDIT_EVENT_SEND_REFUSED);
  EXPECT_THAT(refused_send.reasons(), ::testing::ElementsAre("HL7_INVALID"));
  v1::AuditEntry last;
  ASSERT_TRUE(last.ParseFromString((*rows)[AuditLog::kRefusalsPerMinute + 1].entry));
  EXPECT_EQ(last.event(), v1::AUDIT_EVENT_CERTIFICATE_REFUSED);
  EXPECT_EQ(last.at().seconds(), 1'800'000'060);
  EXPECT_THAT(last.detail(), HasSubstr("5 earlier refusals were counted but not recorded one by one"));
  (*store)->Close();
}

TEST_F(AuditLogTest, OneChangedByteIsFound) {
  Write(20);
  Tamper("UPDATE audit SET entry = CAST(replace(CAST(entry AS TEXT), '503', '504') AS BLOB) WHERE idx = 7");
  VerifyReport r = Check();
  EXPECT_FALSE(r.intact);
  EXPECT_THAT(r.problem, HasSubstr("entry 7: altered"));
  // The broker itself refuses to start on it.
  auto store = OpenSqliteStore(db());
  ASSERT_TRUE(store.ok());
  Tamper("UPDATE audit SET leaf = (SELECT leaf FROM audit WHERE idx = 6) WHERE idx = 7");
  EXPECT_EQ(AuditLog::Open(options_, **store, clock_).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(AuditLogTest, AChangeWithARecomputedHashIsFoundByTheTreeHead) {
  Write(20);
  // A careful forger also fixes the recorded leaf hash: the signed head catches it.
  auto copy = ReadStoreFile(db());
  v1::AuditEntry e;
  ASSERT_TRUE(e.ParseFromString(copy->entries[10].entry()));
  e.set_recipient("511");
  const std::string forged = Canonical(e);
  Tamper(absl::StrCat("UPDATE audit SET entry = x'", absl::BytesToHexString(forged), "', leaf = x'",
                      ToHex(LeafHash(forged)), "' WHERE idx = 10"));
  VerifyReport r = Check();
  EXPECT_FALSE(r.intact);
  EXPECT_THAT(r.problem, HasSubstr("entries 8 to 15: altered"));
}

TEST_F(AuditLogTest, ADeletedEntryIsFound) {
  Write(20);
  Tamper("DELETE FROM audit WHERE idx = 5");
  EXPECT_THAT(Check().problem, HasSubstr("entry 5: missing"));
}

TEST_F(AuditLogTest, SwappedEntriesAreFound) {
  Write(20);
  Tamper("UPDATE audit SET idx = -1 WHERE idx = 3; UPDATE audit SET idx = 3 WHERE idx = 4; "
         "UPDATE audit SET idx = 4 WHERE idx = -1");
  EXPECT_THAT(Check().problem, HasSubstr("entry 3: holds entry 4"));
}

TEST_F(AuditLogTest, ATruncatedTailIsFound) {
  Write(20);
  Tamper("DELETE FROM audit WHERE idx >= 17");
  EXPECT_THAT(Check().problem, HasSubstr("log truncated: the tree head signed at size 20"));
}

TEST_F(AuditLogTest, AForgedTreeHeadIsFound) {
  Write(20);
  EVP_PKEY* other = nullptr;
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr);
  EVP_PKEY_keygen_init(ctx);
  EVP_PKEY_keygen(ctx, &other);
  EVP_PKEY_CTX_free(ctx);
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, other, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  auto forger = Key::FromPem(std::string(data, n), "forger");
  BIO_free(bio);
  EVP_PKEY_free(other);
  ASSERT_TRUE(forger.ok());
  // Re-signed with another key under its own id, then claiming ours.
  auto copy = ReadStoreFile(db());
  v1::SignedTreeHead head = copy->heads.back();
  Hash root;
  HashFromBytes(head.root_hash(), &root);
  v1::SignedTreeHead resigned = SignTreeHead(*forger, head.tree_size(), absl::Now(), root);
  Tamper(absl::StrCat("UPDATE tree_heads SET head = x'", absl::BytesToHexString(resigned.SerializeAsString()),
                      "' WHERE tree_size = ", head.tree_size()));
  EXPECT_THAT(Check().problem, HasSubstr("not by the key given"));
  resigned.set_key_id(pub_->key_id());
  Tamper(absl::StrCat("UPDATE tree_heads SET head = x'", absl::BytesToHexString(resigned.SerializeAsString()),
                      "' WHERE tree_size = ", head.tree_size()));
  EXPECT_THAT(Check().problem, HasSubstr("signature does not verify"));
}

TEST_F(AuditLogTest, ExportFilesRoundTripAndVerify) {
  Write(12);
  auto copy = ReadStoreFile(db());
  ASSERT_TRUE(copy.ok());
  const std::string file = (dir_ / "log.export").string();
  {
    std::ofstream out(file, std::ios::binary);
    v1::ExportChunk a, b;
    for (const auto& e : copy->entries) *a.add_entries() = e;
    for (const auto& h : copy->heads) *b.add_tree_heads() = h;
    ASSERT_TRUE(WriteExportChunk(a, out) && WriteExportChunk(b, out));
  }
  auto back = ReadExportFile(file);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(Verify(*back, *pub_).intact);
  fs::resize_file(file, fs::file_size(file) - 5);
  EXPECT_FALSE(ReadExportFile(file).ok());
}

TEST(Query, FiltersSelectEntries) {
  v1::AuditEntry e;
  e.set_event(v1::AUDIT_EVENT_SEND_ACCEPTED);
  e.set_sender("RR8");
  e.set_recipient("503");
  e.set_workflow("HOSPITAL_DISCHARGE");
  e.set_purpose("direct-care");
  e.set_subject("abc");
  e.mutable_at()->set_seconds(100);
  v1::AuditFilter f;
  EXPECT_TRUE(Matches(e, f, ""));
  EXPECT_TRUE(Matches(e, f, "abc"));
  EXPECT_FALSE(Matches(e, f, "abd"));
  f.set_organisation("503");
  EXPECT_TRUE(Matches(e, f, ""));
  f.set_organisation("511");
  EXPECT_FALSE(Matches(e, f, ""));
  f.Clear();
  f.add_events(v1::AUDIT_EVENT_SEND_DENIED);
  EXPECT_FALSE(Matches(e, f, ""));
  f.Clear();
  f.mutable_from()->set_seconds(101);
  EXPECT_FALSE(Matches(e, f, ""));
  f.Clear();
  f.mutable_until()->set_seconds(100);
  EXPECT_FALSE(Matches(e, f, ""));
  f.Clear();
  f.set_overrides_only(true);
  EXPECT_FALSE(Matches(e, f, ""));
  e.set_safeguarding_override(true);
  EXPECT_TRUE(Matches(e, f, ""));
  EXPECT_EQ(DescribeFilter(f, "abc"), "subject abc; overrides only");
  f.Clear();
  e.set_message_id("m2");
  f.add_message_ids("m1");
  EXPECT_FALSE(Matches(e, f, ""));
  f.add_message_ids("m2");
  EXPECT_TRUE(Matches(e, f, ""));
  EXPECT_EQ(DescribeFilter(f, ""), "messages m1 m2");
}

TEST(Query, AnOverrideIsAMessageOrACldRowReleasedWithDissentSetAside) {
  v1::AuditEntry e;
  e.set_safeguarding_override(true);
  for (auto [event, is] : {std::pair{v1::AUDIT_EVENT_SEND_ACCEPTED, true}, {v1::AUDIT_EVENT_ROW_RELEASED, true},
                           {v1::AUDIT_EVENT_OVERRIDE_REVIEWED, false}, {v1::AUDIT_EVENT_DELIVERED, false}}) {
    e.set_event(event);
    EXPECT_EQ(IsOverride(e), is) << event;
  }
  e.set_event(v1::AUDIT_EVENT_ROW_RELEASED);
  e.set_safeguarding_override(false);
  EXPECT_FALSE(IsOverride(e));
}

}  // namespace
}  // namespace carebroker::audit
