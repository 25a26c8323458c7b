// Reload without restart, through the real server: the config file, the
// agreements and the TLS files change under a running broker while a
// Receive stream stays open; a CRL file published beside it takes effect by
// itself; a CRL past its next-update time refuses or warns as configured.
// CRLs are made here, signed with the dev PKI's CA key, so one can expire
// within the test.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "broker/client/client.h"
#include "broker/config/config.h"
#include "carebroker/v1/policy.grpc.pb.h"
#include "core/files.h"
#include "core/log.h"
#include "tests/integration/harness.h"

namespace carebroker::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::HasSubstr;

std::string Pem(const std::string& name) {
  auto pem = ReadFileToString(absl::StrCat(PkiDir(), "/", name), "test file");
  EXPECT_TRUE(pem.ok()) << pem.status();
  return pem.ok() ? *pem : "";
}

// A CRL from the dev CA listing the certificates in `revoked` (file names
// in the PKI folder), issued a minute ago and due `valid_for` from now.
std::string MakeCrl(const std::vector<std::string>& revoked, absl::Duration valid_for) {
  auto read_cert = [](const std::string& pem) {
    BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    X509* c = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    return c;
  };
  const std::string key_pem = Pem("ca.key");
  X509* ca = read_cert(Pem("ca.crt"));
  BIO* kbio = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(kbio, nullptr, nullptr, nullptr);
  BIO_free(kbio);
  EXPECT_TRUE(ca != nullptr && key != nullptr);
  X509_CRL* crl = X509_CRL_new();
  X509_CRL_set_version(crl, 1);
  X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca));
  const time_t now = std::time(nullptr);
  ASN1_TIME* last = ASN1_TIME_set(nullptr, now - 60);
  ASN1_TIME* next = ASN1_TIME_set(nullptr, now + absl::ToInt64Seconds(valid_for));
  X509_CRL_set1_lastUpdate(crl, last);
  X509_CRL_set1_nextUpdate(crl, next);
  for (const std::string& name : revoked) {
    X509* c = read_cert(Pem(name));
    X509_REVOKED* r = X509_REVOKED_new();
    X509_REVOKED_set_serialNumber(r, X509_get_serialNumber(c));
    X509_REVOKED_set_revocationDate(r, last);
    X509_CRL_add0_revoked(crl, r);
    X509_free(c);
  }
  X509_CRL_sort(crl);
  EXPECT_GT(X509_CRL_sign(crl, key, EVP_sha256()), 0);
  BIO* out = BIO_new(BIO_s_mem());
  PEM_write_bio_X509_CRL(out, crl);
  char* data = nullptr;
  const long n = BIO_get_mem_data(out, &data);
  std::string pem(data, static_cast<size_t>(n));
  BIO_free(out);
  ASN1_TIME_free(last);
  ASN1_TIME_free(next);
  X509_CRL_free(crl);
  EVP_PKEY_free(key);
  X509_free(ca);
  return pem;
}

// A new connection (never a pooled one), so each call is a new handshake.
std::shared_ptr<grpc::Channel> FreshChannel(const Broker& b, const std::string& who) {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = Pem("ca.crt");
  o.pem_cert_chain = Pem(who + ".crt");
  o.pem_private_key = Pem(who + ".key");
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(b.address(), grpc::SslCredentials(o), args);
}

// Whether `who` can make a call now (a handshake the gate accepts).
bool Admitted(const Broker& b, const std::string& who, std::string* server_cert = nullptr) {
  return HealthStatus(FreshChannel(b, who), server_cert) == 1;
}

// Polls `done` every 100 ms for up to 15 s.
template <typename F>
bool Eventually(F done) {
  for (int i = 0; i < 150; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return done();
}

class ReloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("reload");
    config_ = dir_ + "/carebroker.yaml";
    crl_ = dir_ + "/crl.pem";
  }

  // The config file with these organisations (a YAML block) and extra keys.
  void WriteConfig(const std::string& organisations, const std::string& extra = "",
                   const std::string& cert = "server", const std::string& crl_expired = "refuse") {
    const std::string pki = PkiDir();
    std::ofstream(config_) << ConfigYaml(dir_ + "/data",
                                         absl::StrCat("tls:\n  cert: ", pki, "/", cert, ".crt\n  key: ", pki, "/", cert,
                                                      ".key\n  ca: ", pki, "/ca.crt\n  crl: ", crl_,
                                                      "\n  crl_expired: ", crl_expired, "\n", extra),
                                         organisations);
  }

  absl::StatusOr<std::unique_ptr<Broker>> Start() {
    auto config = LoadConfig(config_);
    if (!config.ok()) return config.status();
    BrokerOptions o;
    o.reload_config = [path = config_] { return LoadConfig(path); };
    return Broker::Start(*config, o);
  }

  double Metric(const Broker& b, const std::string& line_start) {
    const std::string text = HttpCall(b.metrics_port(), "/metrics").body;
    const size_t at = text.find("\n" + line_start + " ");
    if (at == std::string::npos) return -1;
    return std::stod(text.substr(at + line_start.size() + 2));
  }

  std::string dir_, config_, crl_;
};

constexpr char kFourOrgs[] = R"(
organisations:
  - {ods: RR8, name: Leeds Teaching Hospitals NHS Trust, kind: nhs_trust}
  - {ods: "503", name: Lincolnshire County Council, kind: local_authority}
  - {ods: X26, name: NHS England, kind: nhs_england}
  - {ods: Y06601, name: Example GP practice, kind: gp_practice}
)";

const std::string kFiveOrgs =
    absl::StrCat(kFourOrgs, "  - {ods: RH8, name: Royal Devon University Healthcare NHS Foundation Trust, kind: nhs_trust}\n");

TEST_F(ReloadTest, ANewOrganisationRoutingAndCertificateArriveWhileAStreamStaysOpen) {
  std::ofstream(crl_) << Pem("crl.pem");
  WriteConfig(kFourOrgs);
  auto broker = Start();
  ASSERT_TRUE(broker.ok()) << broker.status();
  Broker& b = **broker;
  auto council = StubAs(b, "503");
  Receiver rx(*council, 10);
  auto rh8 = StubAs(b, "RH8");
  v1::SendReceipt receipt;
  grpc::Status before = Call(&v1::Exchange::Stub::Send, *rh8, Req("503"), &receipt);
  EXPECT_EQ(ErrorReason(before), "UNKNOWN_ORGANISATION") << before.error_message();
  std::string presented;
  ASSERT_TRUE(Admitted(b, "RR8", &presented));
  EXPECT_EQ(presented, Pem("server.crt"));

  // The new file: a fifth organisation, a routing table, the next server
  // certificate, and a limit only a restart changes.
  WriteConfig(kFiveOrgs, "routing: {postcode_districts: {LN1: \"503\"}}\nlimits: {max_streams: 7}\n", "server-next");
  auto op = v1::Policy::NewStub(ChannelAs(b, "operator"));
  v1::ReloadResponse r;
  grpc::Status s = Call(&v1::Policy::Stub::Reload, *op, v1::ReloadRequest(), &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(r.organisations(), 5);
  EXPECT_THAT(r.server_certificate(), HasSubstr("localhost (next)"));
  EXPECT_THAT(r.restart_pending(), Contains("limits"));
  EXPECT_FALSE(r.crl_next_update().empty());

  // RH8 is registered now, and a care record is routed by its postcode; the
  // stream opened before the reload receives both.
  const std::string id = SendOk(*rh8, Req("503"));
  v1::SendRequest routed = CareSend("", "HOSPITAL_DISCHARGE", "direct-care");
  routed.set_route("council-of-residence");
  const std::string routed_id = SendOk(*StubAs(b, "RR8"), routed);
  std::vector<std::string> got;
  for (int i = 0; i < 2; ++i) {
    auto d = rx.Next();
    ASSERT_TRUE(d.has_value()) << "the stream opened before the reload still delivers";
    got.push_back(d->message_id());
  }
  EXPECT_THAT(got, ::testing::UnorderedElementsAre(id, routed_id));
  // New handshakes get the new certificate (gRPC re-reads it within a second).
  EXPECT_TRUE(Eventually([&] { return Admitted(b, "RR8", &presented) && presented == Pem("server-next.crt"); }));
  EXPECT_EQ(Metric(b, "carebroker_config_reloads_total{outcome=\"ok\"}"), 1);

  AuditRun q = AuditCli(b, "ig-officer", {"--format", "json", "query", "--event", "config-reloaded"});
  ASSERT_EQ(q.rc, 0) << q.err;
  EXPECT_THAT(q.out, HasSubstr("5 organisations"));
  EXPECT_THAT(q.out, HasSubstr("at the next restart: limits"));
  EXPECT_TRUE(rx.Close().ok());
}

TEST_F(ReloadTest, ABadFileKeepsTheSetInForceAndSaysWhere) {
  std::ofstream(crl_) << Pem("crl.pem");
  WriteConfig(kFourOrgs);
  auto broker = Start();
  ASSERT_TRUE(broker.ok()) << broker.status();
  Broker& b = **broker;
  // A bad ODS code in the config file: FILE:LINE: key: reason.
  WriteConfig(absl::StrCat(kFiveOrgs, "  - {ods: not-an-ods, name: X, kind: nhs_trust}\n"));
  auto r = b.Reload("test");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ReasonOf(r.status()), "CONFIG_INVALID");
  EXPECT_THAT(r.status().message(), HasSubstr(absl::StrCat(config_, ":")));
  EXPECT_THAT(r.status().message(), HasSubstr("organisations[5].ods: an ODS code is"));
  // A key that is not the certificate's, and a CRL from another CA: both named, by file.
  const std::string pki = PkiDir();
  std::ofstream(config_) << ConfigYaml(dir_ + "/data",
                                       absl::StrCat("tls:\n  cert: ", pki, "/server-next.crt\n  key: ", pki,
                                                    "/server.key\n  ca: ", pki, "/rogue-ca.crt\n  crl: ", crl_, "\n"),
                                       kFiveOrgs);
  r = b.Reload("test");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr(absl::StrCat(pki, "/server.key: tls.key: is not the key of")));
  // A broken agreement: its own reason, file and line.
  std::ofstream(config_) << ConfigYaml(dir_ + "/data",
                                       absl::StrCat("tls:\n  cert: ", pki, "/server.crt\n  key: ", pki,
                                                    "/server.key\n  ca: ", pki, "/ca.crt\n  crl: ", crl_, "\n",
                                                    "policy: {agreements_dir: ", dir_, "/agreements}\n"),
                                       kFiveOrgs);
  fs::create_directories(dir_ + "/agreements");
  std::ofstream(dir_ + "/agreements/broken.yaml") << "id: DSA-BROKEN\ntitle: t\nversion: \"1\"\n"
                                                     "valid_from: 2026-01-01\nvalid_until: 2026-12-31\nflows: []\n";
  r = b.Reload("test");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ReasonOf(r.status()), "AGREEMENTS_INVALID");
  EXPECT_THAT(r.status().message(), HasSubstr("broken.yaml:6: flows: required"));

  // The old set is in force throughout: RH8 is still unknown, RR8 still sends.
  v1::SendReceipt receipt;
  EXPECT_EQ(ErrorReason(Call(&v1::Exchange::Stub::Send, *StubAs(b, "RH8"), Req("503"), &receipt)),
            "UNKNOWN_ORGANISATION");
  SendOk(*StubAs(b, "RR8"), Req("503"));
  EXPECT_EQ(Metric(b, "carebroker_config_reloads_total{outcome=\"refused\"}"), 3);
  AuditRun q = AuditCli(b, "ig-officer", {"--format", "json", "query", "--event", "config-rejected", "--event",
                                          "agreements-rejected"});
  ASSERT_EQ(q.rc, 0) << q.err;
  EXPECT_EQ(nlohmann::json::parse(q.out).size(), 3u) << q.out;
}

TEST_F(ReloadTest, APublishedCrlTakesEffectWithoutAnyoneActing) {
  std::ofstream(crl_) << MakeCrl({}, absl::Hours(24));
  WriteConfig(kFourOrgs);
  auto broker = Start();
  ASSERT_TRUE(broker.ok()) << broker.status();
  Broker& b = **broker;
  ASSERT_TRUE(Admitted(b, "RR8"));
  // The CA revokes RR8's certificate and publishes the list over the file.
  const std::string fresh = MakeCrl({"RR8.crt"}, absl::Hours(48));
  ASSERT_TRUE(WriteFileAtomically(dir_, "crl.pem", fresh));
  EXPECT_TRUE(Eventually([&] { return !Admitted(b, "RR8"); })) << "the broker re-reads the changed CRL";
  EXPECT_TRUE(Admitted(b, "503"));
  EXPECT_GE(Metric(b, "carebroker_certificate_refusals_total{reason=\"CERTIFICATE_REVOKED\"}"), 1);
  // A garbled file is refused and the list in force stays.
  ASSERT_TRUE(WriteFileAtomically(dir_, "crl.pem", "-----BEGIN X509 CRL-----\ngarbage\n"));
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_FALSE(Admitted(b, "RR8"));
  EXPECT_TRUE(Admitted(b, "503"));
  AuditRun q = AuditCli(b, "ig-officer", {"--format", "json", "query", "--event", "config-rejected"});
  ASSERT_EQ(q.rc, 0) << q.err;
  EXPECT_THAT(q.out, HasSubstr("the changed CRL file was not put in force"));
}

TEST_F(ReloadTest, AnExpiredCrlRefusesEveryHandshakeByDefault) {
  // At start, a CRL already past its time is refused, naming the choice.
  std::ofstream(crl_) << Pem("crl-expired.pem");
  WriteConfig(kFourOrgs);
  auto refused = Start();
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("tls.crl: has passed its next-update time"));
  EXPECT_THAT(refused.status().message(), HasSubstr("tls.crl_expired: warn"));

  // A CRL that falls due while the broker runs.
  std::ofstream(crl_) << MakeCrl({"revoked.crt"}, absl::Seconds(2));
  auto broker = Start();
  ASSERT_TRUE(broker.ok()) << broker.status();
  Broker& b = **broker;
  std::this_thread::sleep_for(std::chrono::seconds(3));
  EXPECT_FALSE(Admitted(b, "RR8")) << "refuse: no handshake passes a stale CRL";
  EXPECT_GE(Metric(b, "carebroker_certificate_refusals_total{reason=\"CRL_EXPIRED\"}"), 1);
  EXPECT_EQ(Metric(b, "carebroker_crl_expired"), 1);
  // Publishing a fresh one restores service by itself.
  ASSERT_TRUE(WriteFileAtomically(dir_, "crl.pem", MakeCrl({"revoked.crt"}, absl::Hours(24))));
  EXPECT_TRUE(Eventually([&] { return Admitted(b, "RR8"); }));
  EXPECT_EQ(Metric(b, "carebroker_crl_expired"), 0);
  EXPECT_FALSE(Admitted(b, "revoked"));
}

TEST_F(ReloadTest, AnExpiredCrlOnlyWarnsWhenTheConfigSaysSo) {
  std::ofstream(crl_) << Pem("crl-expired.pem");
  WriteConfig(kFourOrgs, "", "server", "warn");
  LogCapture logs;
  auto broker = Start();
  ASSERT_TRUE(broker.ok()) << broker.status();
  Broker& b = **broker;
  EXPECT_TRUE(Admitted(b, "RR8")) << "warn: the stale list is applied, not a reason to refuse";
  EXPECT_FALSE(Admitted(b, "revoked")) << "a revoked certificate is still refused";
  EXPECT_EQ(Metric(b, "carebroker_crl_expired"), 1);
  EXPECT_TRUE(Eventually([&] {
    for (const std::string& line : logs.lines()) {
      if (absl::StrContains(line, "\"event\":\"tls.crl_expired\"") && absl::StrContains(line, "\"level\":\"warning\"")) {
        return true;
      }
    }
    return false;
  })) << "the alarm is logged";
}

}  // namespace
}  // namespace carebroker::testing
