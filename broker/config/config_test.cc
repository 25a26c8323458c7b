#include "broker/config/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_replace.h"

namespace carebroker {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// A folder with stand-in TLS files, so path checks can pass or fail.
class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cb-config-" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "pki");
    for (const char* f : {"server.crt", "server.key", "ca.crt", "crl.pem"}) std::ofstream(dir_ / "pki" / f) << "x";
    std::ofstream(dir_ / "pki" / "audit-signing.key") << "stand-in";
    std::ofstream(dir_ / "pki" / "audit-subject.key") << std::string(32, 's');
    for (const char* f : {"audit-signing.key", "audit-subject.key"}) {
      fs::permissions(dir_ / "pki" / f, fs::perms::owner_read | fs::perms::owner_write);
    }
    fs::create_directories(dir_ / "agreements");
  }
  void TearDown() override { fs::remove_all(dir_); }

  absl::StatusOr<std::shared_ptr<const Config>> Parse(const std::string& yaml, ConfigOverrides o = {}) {
    return ParseConfig(yaml, "cb.yaml", dir_.string(), o);
  }
  static std::string Base(const std::string& extra = "") {
    return R"(listen: 127.0.0.1:7443
data_dir: data
tls: {cert: pki/server.crt, key: pki/server.key, ca: pki/ca.crt, crl: pki/crl.pem}
policy: {agreements_dir: agreements}
audit: {signing_key: pki/audit-signing.key, subject_key: pki/audit-subject.key}
organisations:
  - {ods: RR8, name: Leeds, kind: nhs_trust}
  - {ods: "503", name: Lincolnshire, kind: local_authority}
)" + extra;
  }
  void ExpectError(const std::string& yaml, const std::string& want) {
    auto c = Parse(yaml);
    ASSERT_FALSE(c.ok()) << yaml;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(want));
  }

  fs::path dir_;
};

TEST_F(ConfigTest, ResolvesPathsAndFillsDefaults) {
  auto c = Parse(Base());
  ASSERT_TRUE(c.ok()) << c.status();
  const auto& p = (*c)->proto();
  EXPECT_EQ(p.data_dir(), (dir_ / "data").string());
  EXPECT_EQ(p.tls().ca(), (dir_ / "pki/ca.crt").string());
  EXPECT_EQ((*c)->sqlite_path(), (dir_ / "data/carebroker.db").string());
  EXPECT_EQ(p.limits().max_message_bytes(), 8u << 20);
  EXPECT_EQ(p.limits().max_in_flight_per_stream(), 1000u);
  EXPECT_EQ(p.limits().intake_threads(), std::max(1u, std::thread::hardware_concurrency()));
  EXPECT_EQ(p.limits().intake_queue(), 4096u);
  EXPECT_EQ(p.limits().handshake_timeout().seconds(), 10);
  EXPECT_EQ(p.limits().idle_timeout().seconds(), 300);
  EXPECT_EQ((*c)->expiry(), absl::Hours(120));
  EXPECT_EQ((*c)->visibility_timeout(), absl::Seconds(30));
  EXPECT_EQ((*c)->retention(), absl::Hours(24 * 30));
  EXPECT_EQ((*c)->idempotency_window(), absl::Hours(24 * 30)) << "the retention period";
  EXPECT_EQ(p.delivery().max_attempts(), 10u);
  EXPECT_EQ((*c)->override_review_within(), absl::Hours(24 * 5)) << "governance.review_days";
  ASSERT_NE((*c)->FindOrganisation(OrgCode("503")), nullptr);
  EXPECT_EQ((*c)->FindOrganisation(OrgCode("503"))->name(), "Lincolnshire");
  EXPECT_EQ((*c)->FindOrganisation(OrgCode("999")), nullptr);
}

TEST_F(ConfigTest, LogLevelAndStaleCrlChoiceHaveDefaultsAndAreChecked) {
  auto c = Parse(Base());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->proto().log().level(), "info");
  EXPECT_EQ((*c)->proto().tls().crl_expired(), "refuse");
  ASSERT_TRUE(Parse(Base("log: {level: debug}\n")).ok());
  ExpectError(Base("log: {level: chatty}\n"), "cb.yaml:9: log.level: debug, info, warning or error");
  const std::string warn = R"(listen: 127.0.0.1:7443
data_dir: data
tls: {cert: pki/server.crt, key: pki/server.key, ca: pki/ca.crt, crl: pki/crl.pem, crl_expired: )";
  ASSERT_TRUE(Parse(absl::StrCat(warn, "warn}\n", Base().substr(Base().find("policy:")))).ok());
  ExpectError(absl::StrCat(warn, "ignore}\n", Base().substr(Base().find("policy:"))),
              "tls.crl_expired: refuse or warn");
}

TEST_F(ConfigTest, AReloadKeepsWhatOnlyARestartChanges) {
  auto running = Parse(Base());
  ASSERT_TRUE(running.ok());
  auto next = Parse(Base("  - {ods: X26, name: NHS England, kind: nhs_england}\n"
                         "limits: {max_streams: 7}\nlog: {level: debug}\n"),
                    ConfigOverrides{"127.0.0.1:9999", std::nullopt});
  ASSERT_TRUE(next.ok()) << next.status();
  std::vector<std::string> pending;
  auto in_force = ForReload(**next, **running, &pending);
  EXPECT_NE(in_force->FindOrganisation(OrgCode("X26")), nullptr) << "organisations come from the new file";
  EXPECT_EQ(in_force->proto().log().level(), "debug");
  EXPECT_EQ(in_force->proto().listen(), "127.0.0.1:7443") << "listen stays until a restart";
  EXPECT_EQ(in_force->proto().limits().max_streams(), 1024u);
  EXPECT_EQ(in_force->sqlite_path(), (*running)->sqlite_path());
  EXPECT_THAT(pending, ::testing::ElementsAre("listen", "limits"));
  pending.clear();
  ForReload(**running, **running, &pending);
  EXPECT_TRUE(pending.empty());
}

TEST_F(ConfigTest, FlagsOverrideTheFile) {
  auto c = Parse(Base(), ConfigOverrides{"127.0.0.1:9999", "/tmp/elsewhere"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->proto().listen(), "127.0.0.1:9999");
  EXPECT_EQ((*c)->sqlite_path(), "/tmp/elsewhere/carebroker.db");
  EXPECT_EQ((*c)->proto().metrics().listen(), "127.0.0.1:9464");

  auto m = Parse(Base() + "metrics:\n  listen: 127.0.0.1:9000\n", ConfigOverrides{{}, {}, "off"});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->proto().metrics().listen(), "off");
  auto bad = Parse(Base(), ConfigOverrides{{}, {}, "nowhere"});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("metrics.listen"));
}

TEST_F(ConfigTest, PreciseErrors) {
  ExpectError("data_dir: d\n", "cb.yaml: listen: required");
  ExpectError(Base() + "delivery: {expiry: 0s}\n", "cb.yaml:9: delivery.expiry: must be more than zero");
  ExpectError(Base() + "delivery: {idempotency_window: 0s}\n",
              "cb.yaml:9: delivery.idempotency_window: must be more than zero");
  ExpectError(Base() + "delivery: {max_attempts: 1001}\n", "cb.yaml:9: delivery.max_attempts: must be 1 to 1000");
  ExpectError(Base() + "governance: {review_days: 366}\n", "cb.yaml:9: governance.review_days: must be 1 to 365 days");
  ExpectError(Base() + "limits: {max_message_bytes: 999999999}\n", "limits.max_message_bytes: must be at most");
  ExpectError(Base() + "limits: {max_message_bytes: 1048576, memory_budget_bytes: 1048576}\n",
              "limits.memory_budget_bytes");
  ExpectError(Base() + "limits: {intake_threads: 257}\n", "limits.intake_threads: must be at most 256");
  ExpectError(Base() + "limits: {intake_queue: 1000001}\n", "limits.intake_queue: must be at most 1000000");
  ExpectError(Base() + "limits: {handshake_timeout: 500ms}\n", "limits.handshake_timeout: must be 1s to 5m");
  ExpectError(Base() + "limits: {handshake_timeout: 6m}\n", "limits.handshake_timeout: must be 1s to 5m");
  ExpectError(Base() + "limits: {idle_timeout: 25h}\n", "limits.idle_timeout: must be 1s to 24h");
  ExpectError(Base() + "  - {ods: RR8, name: Again, kind: nhs_trust}\n",
              "cb.yaml:9: organisations[2].ods: 'RR8' is registered twice");
  ExpectError(Base() + "  - {ods: rr9, name: Lower, kind: nhs_trust}\n", "organisations[2].ods: an ODS code is");
  ExpectError(Base() + "  - {ods: RR9, name: NoKind}\n", "cb.yaml:9: organisations[2].kind: required");
  ExpectError(Base() + "  - {ods: RR9, kind: nhs_trust}\n", "organisations[2].name: required");
  ExpectError("listen: 127.0.0.1:99999\ndata_dir: d\n", "listen: expected host:port");
  ExpectError("listen: 127.0.0.1:1\ndata_dir: d\ntls: {cert: pki/nope.crt}\n", "tls.cert: cannot read");
  ExpectError("listen: 127.0.0.1:1\ndata_dir: d\ntls: {cert: pki/server.crt, key: pki/server.key}\n",
              "tls.ca: required");
  ExpectError(R"(listen: 127.0.0.1:1
data_dir: d
tls: {cert: pki/server.crt, key: pki/server.key, ca: pki/ca.crt}
organisations: []
)",
              "organisations: at least one");
}

TEST_F(ConfigTest, PostgresStore) {
  // On this machine: TLS is the server's choice (prefer); paths resolve;
  // the pool has its default.
  auto local = Parse(Base("store:\n  postgres: {connection: \"postgresql://carebroker@127.0.0.1:5432/cb\", "
                          "password_file: pki/ca.crt}\n"));
  ASSERT_TRUE(local.ok()) << local.status();
  const auto& p = (*local)->proto().store().postgres();
  EXPECT_EQ(p.sslmode(), "prefer");
  EXPECT_EQ(p.pool_size(), 2u);
  EXPECT_EQ(p.password_file(), (dir_ / "pki/ca.crt").string());
  EXPECT_TRUE((*local)->sqlite_path().empty());

  // Elsewhere: the server's certificate is verified, by default.
  auto remote = Parse(Base("store:\n  postgres: {connection: \"host=db1.region.nhs.uk,db2.region.nhs.uk "
                           "dbname=carebroker user=cb\", sslrootcert: pki/ca.crt, sslcert: pki/server.crt, "
                           "sslkey: pki/server.key, pool_size: 8}\n"));
  ASSERT_TRUE(remote.ok()) << remote.status();
  EXPECT_EQ((*remote)->proto().store().postgres().sslmode(), "verify-full");
  EXPECT_EQ((*remote)->proto().store().postgres().pool_size(), 8u);

  const std::string pg = "store:\n  postgres: ";
  ExpectError(Base(pg + "{pool_size: 2}\n"), "store.postgres.connection: required");
  ExpectError(Base(pg + "{connection: \"postgresql://cb:pw@127.0.0.1/cb\"}\n"),
              "store.postgres.connection: must not hold a password");
  ExpectError(Base(pg + "{connection: \"host=127.0.0.1 password=pw\"}\n"), "must not hold a password");
  ExpectError(Base(pg + "{connection: \"postgresql://127.0.0.1/cb?nosuchoption=1\"}\n"),
              "store.postgres.connection: not a libpq connection string");
  ExpectError(Base(pg + "{connection: \"nonsense words\"}\n"), "not a libpq connection string");
  ExpectError(Base(pg + "{connection: \"postgresql://db.region.nhs.uk/cb\", sslmode: require, "
                        "sslrootcert: pki/ca.crt}\n"),
              "store.postgres.sslmode: a database on another machine needs verify-full or verify-ca");
  ExpectError(Base(pg + "{connection: \"postgresql://db.region.nhs.uk/cb?sslmode=disable\"}\n"),
              "store.postgres.sslmode: a database on another machine");
  ExpectError(Base(pg + "{connection: \"postgresql://db.region.nhs.uk/cb\"}\n"),
              "store.postgres.sslrootcert: required with sslmode verify-ca or verify-full");
  ExpectError(Base(pg + "{connection: \"postgresql://127.0.0.1/cb\", sslmode: strict}\n"),
              "store.postgres.sslmode: must be one of");
  ExpectError(Base(pg + "{connection: \"postgresql://127.0.0.1/cb\", sslcert: pki/server.crt}\n"),
              "store.postgres.sslkey: sslcert and sslkey go together");
  ExpectError(Base(pg + "{connection: \"postgresql://127.0.0.1/cb\", password_file: pki/none}\n"),
              "store.postgres.password_file: cannot read");
  ExpectError(Base(pg + "{connection: \"postgresql://127.0.0.1/cb\", pool_size: 65}\n"),
              "store.postgres.pool_size: must be 1..64");
  // The string is not echoed, as it may hold what it should not.
  auto c = Parse(Base(pg + "{connection: \"postgresql://cb:hunter2@127.0.0.1/cb\"}\n"));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(std::string(c.status().message()).find("hunter2"), std::string::npos);
}

TEST_F(ConfigTest, ReceiveFormatsAndRoutingTables) {
  auto c = Parse(Base() + "  - {ods: Y06601, name: GP, kind: gp_practice, receives: fhir, "
                          "receives_by_workflow: {CARE_PACKAGE: council-json}}\n"
                          "routing:\n  postcode_districts: {LN1: \"503\", SW1A: \"503\"}\n"
                          "  gp_practice_councils: {Y06601: \"503\"}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->ReceiveFormat(OrgCode("Y06601"), "HOSPITAL_DISCHARGE"), adapters::Format::kFhir);
  EXPECT_EQ((*c)->ReceiveFormat(OrgCode("Y06601"), "CARE_PACKAGE"), adapters::Format::kCouncilJson);
  EXPECT_EQ((*c)->ReceiveFormat(OrgCode("503"), "CARE_PACKAGE"), adapters::Format::kCanonical) << "the default";
  EXPECT_EQ((*c)->routing().postcode_districts().at("SW1A"), "503");
  const std::string gp = "  - {ods: Y06601, name: GP, kind: gp_practice";
  ExpectError(Base() + gp + ", receives: xml}\n", "organisations[2].receives: format must be one of canonical");
  ExpectError(Base() + gp + ", receives_by_workflow: {CARE_PACKAGE: pdf}}\n",
              "organisations[2].receives_by_workflow.CARE_PACKAGE: format must be one of");
  ExpectError(Base() + gp + ", receives_by_workflow: {care: fhir}}\n", "organisations[2].receives_by_workflow: keys are workflows");
  ExpectError(Base() + "routing: {postcode_districts: {ln1: \"503\"}}\n", "routing.postcode_districts: keys are postcode districts");
  ExpectError(Base() + "routing: {postcode_districts: {LN1: RR8}}\n",
              "routing.postcode_districts.LN1: must name a registered local_authority");
  ExpectError(Base() + "routing: {gp_practice_councils: {Y06601: \"999\"}}\n",
              "routing.gp_practice_councils.Y06601: must name a registered local_authority");
  EXPECT_TRUE(IsPostcodeDistrictShape("B33"));
  EXPECT_TRUE(IsPostcodeDistrictShape("EC1A"));
  EXPECT_FALSE(IsPostcodeDistrictShape("LS1 4AP"));
  EXPECT_FALSE(IsPostcodeDistrictShape("123"));
}

TEST_F(ConfigTest, PolicySection) {
  auto without = [](std::string y) { return y.replace(y.find("policy:"), y.find('\n', y.find("policy:")) - y.find("policy:") + 1, ""); };
  ExpectError(without(Base()), "cb.yaml: policy.agreements_dir: required");
  ExpectError(absl::StrReplaceAll(Base(), {{"agreements}", "nowhere}"}}), "cb.yaml:4: policy.agreements_dir: cannot read the folder");
  auto key = [&](const std::string& body, fs::perms perms) {
    std::ofstream(dir_ / "k.key") << body;
    fs::permissions(dir_ / "k.key", perms);
    return absl::StrReplaceAll(Base(), {{"agreements_dir: agreements}", "agreements_dir: agreements, pseudonym_keys: [{organisation: RR8, file: k.key}]}"}});
  };
  const auto owner = fs::perms::owner_read | fs::perms::owner_write;
  ExpectError(key(std::string(32, 'k'), owner | fs::perms::group_read), "policy.pseudonym_keys[0].file: must be readable by the broker's user only");
  ExpectError(key(std::string(32, 'k'), owner | fs::perms::others_read), "policy.pseudonym_keys[0].file: must be readable by the broker's user only");
  ExpectError(key(std::string(31, 'k'), owner), "policy.pseudonym_keys[0].file: a key must be at least 32 bytes");
  auto c = Parse(key(std::string(32, 'k'), owner));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(*(*c)->PseudonymKey(OrgCode("RR8")), std::string(32, 'k'));
  EXPECT_EQ((*c)->PseudonymKey(OrgCode("503")), nullptr);
  ExpectError(absl::StrReplaceAll(key(std::string(32, 'k'), owner), {{"organisation: RR8", "organisation: ZZZ9"}}),
              "policy.pseudonym_keys[0].organisation: not a registered organisation");
}

TEST_F(ConfigTest, TheMeshFrontDoorIsOffByDefaultAndEveryMailboxIsChecked) {
  auto off = Parse(Base());
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ((*off)->proto().mesh().listen(), "off");
  EXPECT_EQ((*off)->proto().mesh().max_request_bytes(), kMeshMaxRequestBytes);
  for (const char* f : {"secret", "rr8.pw"}) {
    std::ofstream(dir_ / f) << "value-of-" << f << "\n";
    fs::permissions(dir_ / f, fs::perms::owner_read | fs::perms::owner_write);
  }
  std::ofstream(dir_ / "open.pw") << "readable by all";
  fs::permissions(dir_ / "open.pw", fs::perms::owner_read | fs::perms::others_read);
  const std::string wf = "  workflows: [{id: API-DOCS-TEST, workflow: W, purpose: direct-care}]\n";
  auto mesh = [&](const std::string& body) { return Base("mesh:\n" + body); };
  auto on = Parse(mesh("  listen: 127.0.0.1:8443\n  shared_secret_file: secret\n" + wf +
                       "  mailboxes: [{id: RR8HC001, organisation: RR8, password_file: rr8.pw}]\n"));
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_EQ((*on)->mesh_shared_secret(), "value-of-secret");
  EXPECT_EQ(*(*on)->MeshPassword("RR8HC001"), "value-of-rr8.pw");
  EXPECT_EQ((*on)->FindMeshMailbox("RR8HC001")->name(), "Leeds") << "named after its organisation by default";
  EXPECT_EQ((*on)->FindMeshMailbox("RR8HC002"), nullptr);
  EXPECT_EQ((*on)->FindMeshWorkflow("API-DOCS-TEST")->workflow(), "W");
  ConfigOverrides o;
  o.mesh_listen = "off";
  EXPECT_EQ((*Parse(mesh("  listen: 127.0.0.1:8443\n  shared_secret_file: secret\n"), o))->proto().mesh().listen(),
            "off");

  ExpectError(mesh("  listen: 127.0.0.1:8443\n"), "mesh.shared_secret_file: required when mesh.listen is on");
  ExpectError(mesh("  listen: everywhere\n"), "mesh.listen: expected host:port");
  ExpectError(mesh("  max_request_bytes: 104857601\n"), "mesh.max_request_bytes: must be at most");
  ExpectError(mesh("  workflows: [{id: api-docs-test, purpose: direct-care}]\n"), "mesh.workflows[0].workflow: required");
  ExpectError(mesh("  workflows: [{id: REFERRAL}]\n"), "mesh.workflows[0].purpose: required");
  ExpectError(mesh("  workflows: [{id: 'A B', purpose: direct-care}]\n"), "mesh.workflows[0].id");
  ExpectError(mesh(wf + "  mailboxes: [{id: rr8hc001, organisation: RR8, password_file: rr8.pw}]\n"),
              "mesh.mailboxes[0].id");
  ExpectError(mesh(wf + "  mailboxes: [{id: RR8HC001, organisation: ZZZ, password_file: rr8.pw}]\n"),
              "mesh.mailboxes[0].organisation: not a registered organisation");
  ExpectError(mesh(wf + "  mailboxes: [{id: RR8HC001, organisation: RR8}]\n"), "mesh.mailboxes[0].password_file: required");
  ExpectError(mesh(wf + "  mailboxes: [{id: RR8HC001, organisation: RR8, password_file: open.pw}]\n"),
              "mesh.mailboxes[0].password_file: must be readable by the broker's user only");
  ExpectError(mesh(wf + "  mailboxes: [{id: RR8HC001, organisation: RR8, password_file: rr8.pw, workflows: [NOPE]}]\n"),
              "mesh.mailboxes[0].workflows: 'NOPE' is not in mesh.workflows");
  ExpectError(mesh(wf + "  mailboxes: [{id: RR8HC001, organisation: RR8, password_file: rr8.pw},\n"
                        "              {id: RR8HC001, organisation: RR8, password_file: rr8.pw}]\n"),
              "mesh.mailboxes[1].id: is listed twice");
}

TEST_F(ConfigTest, MissingFileIsAClearError) {
  auto c = LoadConfig((dir_ / "absent.yaml").string());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("cannot read the config file"));
}

// The shipped example is loaded by the real loader, against a real dev PKI.
TEST(ShippedConfig, ExampleLoads) {
  const char* src = std::getenv("CB_SOURCE_DIR");
  const char* pki = std::getenv("CB_TEST_PKI");
  ASSERT_TRUE(src && pki) << "run through ctest";
  const fs::path inst = fs::temp_directory_path() / ("cb-example-" + std::to_string(::getpid()));
  fs::create_directories(inst);
  fs::copy_file(fs::path(src) / "deploy/config/carebroker.yaml", inst / "carebroker.yaml",
                fs::copy_options::overwrite_existing);
  fs::remove(inst / "pki");
  fs::create_directory_symlink(pki, inst / "pki");
  fs::remove(inst / "agreements");
  fs::create_directory_symlink(fs::path(src) / "deploy/agreements", inst / "agreements");
  fs::create_directories(inst / "keys");
  std::ofstream(inst / "keys/X26.key") << std::string(32, 'k');
  fs::permissions(inst / "keys/X26.key", fs::perms::owner_read | fs::perms::owner_write);
  fs::create_directories(inst / "keys/mesh");
  for (const char* f : {"shared-secret", "RR8HC001.pw", "503HC001.pw", "X26HC001.pw"}) {
    std::ofstream(inst / "keys/mesh" / f) << "dev-" << f << "\n";
    fs::permissions(inst / "keys/mesh" / f, fs::perms::owner_read | fs::perms::owner_write);
  }
  auto c = LoadConfig((inst / "carebroker.yaml").string());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->proto().listen(), "127.0.0.1:7443");
  EXPECT_EQ((*c)->proto().organisations_size(), 6);
  EXPECT_EQ((*c)->expiry(), absl::Hours(120));
  ASSERT_NE((*c)->PseudonymKey(OrgCode("X26")), nullptr);
  EXPECT_TRUE((*c)->MayWriteConsent(Role::kAgency));
  EXPECT_FALSE((*c)->MayWriteConsent(Role::kOperator));
  // The MESH front door, on in the example (the quick start) on 127.0.0.1:8443.
  EXPECT_EQ((*c)->proto().mesh().listen(), "127.0.0.1:8443");
  ASSERT_NE((*c)->FindMeshMailbox("503HC001"), nullptr);
  EXPECT_EQ((*c)->FindMeshMailbox("503HC001")->organisation(), "503");
  ASSERT_NE((*c)->MeshPassword("RR8HC001"), nullptr);
  EXPECT_EQ(*(*c)->MeshPassword("RR8HC001"), "dev-RR8HC001.pw") << "the file's trailing newline is not the password's";
  EXPECT_EQ((*c)->mesh_shared_secret(), "dev-shared-secret");
  ASSERT_NE((*c)->FindMeshWorkflow("TOC_FHIR_IP_DISCH"), nullptr);
  EXPECT_EQ((*c)->FindMeshWorkflow("TOC_FHIR_IP_DISCH")->workflow(), "HOSPITAL_DISCHARGE");
  EXPECT_EQ((*c)->FindMeshWorkflow("HOSPITAL_ADMISSION")->workflow(), "HOSPITAL_ADMISSION");
  fs::remove_all(inst);
}

}  // namespace
}  // namespace carebroker
