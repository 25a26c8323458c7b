// carebroker-connect against a real broker over mutual TLS: HL7 ADT framed
// over MLLP at a trust reaches the council as council JSON and the GP as
// FHIR; every refusal is answered AE or AR as a hospital system needs.
#include "connect/connect.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "adapters/common/testdata.h"
#include "adapters/hl7v2/adt.h"
#include "adapters/hl7v2/er7.h"
#include "connect/mllp.h"
#include "tests/integration/harness.h"

namespace carebroker {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using json = nlohmann::json;
using testing::FreshDir;
using testing::PkiDir;

using adapters::ReadOrDie;
using adapters::SourceDir;

std::string Fixture(const std::string& name) { return adapters::Testdata("hl7v2/" + name); }

// Files in `dir` (not the hidden temporaries), waiting up to 10 s for `n`.
std::vector<fs::path> WaitForFiles(const std::string& dir, size_t n) {
  std::vector<fs::path> out;
  for (int i = 0; i < 500; ++i) {
    out.clear();
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().filename().string()[0] != '.') out.push_back(e.path());
    }
    if (out.size() >= n) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return out;
}

class ConnectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshDir("connect");
    broker_ = testing::StartBroker(
        testing::ConfigYaml(dir_ + "/data",
                            absl::StrCat("policy: {agreements_dir: ", SourceDir(), "/deploy/agreements}\n",
                                         "routing: {postcode_districts: {LS1: \"503\"}}\n"),
                            R"(
organisations:
  - {ods: RR8, name: Leeds Teaching Hospitals NHS Trust, kind: nhs_trust}
  - {ods: Y06601, name: Example GP practice, kind: gp_practice, receives: fhir}
  - {ods: "503", name: Lincolnshire County Council, kind: local_authority, receives: council-json}
)"),
        &SystemClock::Get());
    ASSERT_NE(broker_, nullptr);
  }

  std::string Yaml(const std::string& who, const std::string& body, const std::string& target = "") {
    const std::string pki = PkiDir();
    return absl::StrCat("broker: {target: \"", target.empty() ? broker_->address() : target, "\", cert: ", pki, "/",
                        who, ".crt, key: ", pki, "/", who, ".key, ca: ", pki, "/ca.crt, timeout: 3s}\n", body);
  }

  std::unique_ptr<Connect> StartConnect(const std::string& yaml) {
    auto config = ParseConnectConfig(yaml, "connect.yaml", dir_);
    EXPECT_TRUE(config.ok()) << config.status();
    if (!config.ok()) return nullptr;
    auto c = Connect::Start(*config);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  // The trust's connect: A03 to the council of residence and the GP.
  std::unique_ptr<Connect> Trust(const std::string& target = "") {
    return StartConnect(Yaml("RR8",
                             "mllp:\n  listen: 127.0.0.1:0\n  max_frame_bytes: 65536\n"
                             "  workflows: {A03: HOSPITAL_DISCHARGE, A01: HOSPITAL_ADMISSION}\n"
                             "  purpose: direct-care\n  routes: [council-of-residence, registered-gp]\n",
                             target));
  }

  // Sends one framed message and returns the parsed ACK.
  static hl7::Message Exchange(int port, const std::string& er7) {
    auto fd = mllp::Dial(absl::StrCat("127.0.0.1:", port), absl::Seconds(5));
    EXPECT_TRUE(fd.ok()) << fd.status();
    EXPECT_TRUE(mllp::WriteAll(*fd, mllp::Frame(er7)));
    auto ack = mllp::ReadFrame(*fd, 1 << 20, absl::Seconds(15));
    ::close(*fd);
    EXPECT_TRUE(ack.ok()) << ack.status();
    auto m = hl7::Message::Parse(ack.ok() ? *ack : "");
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) std::abort();
    return *std::move(m);
  }

  std::string dir_;
  std::unique_ptr<Broker> broker_;
};

TEST_F(ConnectTest, DischargeOverMllpReachesTheCouncilAsJsonAndTheGpAsFhir) {
  auto trust = Trust();
  ASSERT_NE(trust, nullptr);
  const std::string council_dir = dir_ + "/council-in", gp_dir = dir_ + "/gp-in";
  auto council = StartConnect(Yaml("503", "outbound: {directory: " + council_dir + ", retry_backoff: 0.1s}\n"));
  auto gp = StartConnect(Yaml("Y06601", "outbound: {directory: " + gp_dir + ", retry_backoff: 0.1s}\n"));
  ASSERT_NE(council, nullptr);
  ASSERT_NE(gp, nullptr);

  const hl7::Message ack = Exchange(trust->mllp_port(), Fixture("adt_a03.hl7"));
  EXPECT_EQ(ack.Find("MSA")->Get(1), "AA") << ack.Find("MSA")->Get(3);
  EXPECT_EQ(ack.Find("MSA")->Get(2), "RR8-A03-0001");

  const auto council_files = WaitForFiles(council_dir, 1);
  ASSERT_EQ(council_files.size(), 1u);
  EXPECT_EQ(council_files[0].extension(), ".json");
  const json c = json::parse(ReadOrDie(council_files[0]));
  EXPECT_EQ(c["person"]["nhsNumber"], "9990000018");
  EXPECT_EQ(c["events"][0]["discharge"]["dischargeDestination"], "54");
  EXPECT_FALSE(c["person"].contains("localIdentifiers")) << "minimised by the agreement";

  const auto gp_files = WaitForFiles(gp_dir, 1);
  ASSERT_EQ(gp_files.size(), 1u);
  const json f = json::parse(ReadOrDie(gp_files[0]));
  EXPECT_EQ(f["resourceType"], "Bundle");
  EXPECT_EQ(f["entry"][0]["resource"]["resourceType"], "MessageHeader");
  EXPECT_EQ(f["entry"][0]["resource"]["destination"][0]["receiver"]["identifier"]["value"], "Y06601");

  // The hospital resends (its ACK was lost): duplicates, not new messages.
  EXPECT_EQ(Exchange(trust->mllp_port(), Fixture("adt_a03.hl7")).Find("MSA")->Get(1), "AA");
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(WaitForFiles(council_dir, 2).size(), 1u);
  EXPECT_EQ(council->delivered(), 1);
  EXPECT_EQ(gp->delivered(), 1);
}

TEST_F(ConnectTest, InvalidOrRefusedMessagesAreAnsweredAe) {
  auto trust = Trust();
  ASSERT_NE(trust, nullptr);
  // Routable (it has a Leeds address), but its NHS number fails Modulus 11.
  const std::string bad = absl::StrReplaceAll(Fixture("bad_nhs_number.hl7"),
                                              {{"|19470301|2", "|19470301|2|||1 HIGH ST^^LEEDS^^LS1 4AP"}});
  const hl7::Message bad_nhs = Exchange(trust->mllp_port(), bad);
  EXPECT_EQ(bad_nhs.Find("MSA")->Get(1), "AE");
  EXPECT_EQ(bad_nhs.Find("MSA")->Get(2), "RR8-A01-0001");
  EXPECT_THAT(bad_nhs.Find("MSA")->Get(3), HasSubstr("NHS_NUMBER_INVALID"));
  EXPECT_EQ(bad_nhs.Find("ERR")->Get(3, 1), "102");

  const hl7::Message unmapped = Exchange(trust->mllp_port(), Fixture("adt_a02.hl7"));
  EXPECT_EQ(unmapped.Find("MSA")->Get(1), "AE");
  EXPECT_EQ(unmapped.Find("ERR")->Get(3, 1), "201");

  std::string elsewhere = Fixture("adt_a03.hl7");
  elsewhere = absl::StrReplaceAll(elsewhere, {{"LS1 4AP", "ZE1 0AA"}});
  const hl7::Message unroutable = Exchange(trust->mllp_port(), elsewhere);
  EXPECT_EQ(unroutable.Find("MSA")->Get(1), "AE");
  EXPECT_THAT(unroutable.Find("MSA")->Get(3), HasSubstr("UNROUTABLE"));
}

TEST_F(ConnectTest, AnUnreachableBrokerIsAnsweredArSoTheHospitalRetries) {
  auto trust = Trust("127.0.0.1:1");
  ASSERT_NE(trust, nullptr);
  const hl7::Message ack = Exchange(trust->mllp_port(), Fixture("adt_a03.hl7"));
  EXPECT_EQ(ack.Find("MSA")->Get(1), "AR");
  EXPECT_EQ(ack.Find("MSA")->Get(2), "RR8-A03-0001");
  EXPECT_THAT(ack.Find("MSA")->Get(3), HasSubstr("resend later"));
}

TEST_F(ConnectTest, AnOversizedFrameIsRejectedAndTheConnectionClosed) {
  auto trust = Trust();
  ASSERT_NE(trust, nullptr);
  auto fd = mllp::Dial(absl::StrCat("127.0.0.1:", trust->mllp_port()), absl::Seconds(5));
  ASSERT_TRUE(fd.ok());
  std::string big = Fixture("adt_a03.hl7");
  big += std::string(70000, 'X');
  ASSERT_TRUE(mllp::WriteAll(*fd, mllp::Frame(big)));
  auto ack = mllp::ReadFrame(*fd, 1 << 20, absl::Seconds(10));
  ASSERT_TRUE(ack.ok()) << ack.status();
  auto m = hl7::Message::Parse(*ack);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->Find("MSA")->Get(1), "AR");
  EXPECT_EQ(m->Find("MSA")->Get(2), "RR8-A03-0001");
  EXPECT_FALSE(mllp::ReadFrame(*fd, 1 << 20, absl::Seconds(2)).ok()) << "closed after the refusal";
  ::close(*fd);
}

TEST_F(ConnectTest, ConcurrentConnectionsEachGetTheirAck) {
  auto trust = Trust();
  ASSERT_NE(trust, nullptr);
  std::vector<std::thread> senders;
  std::atomic<int> accepted{0};
  for (int i = 0; i < 4; ++i) {
    senders.emplace_back([&, i] {
      std::string er7 = absl::StrReplaceAll(Fixture("adt_a01.hl7"), {{"RR8-A01-0001", absl::StrCat("RR8-C-", i)}});
      const hl7::Message ack = Exchange(trust->mllp_port(), er7);
      if (ack.Find("MSA")->Get(1) == "AA" && ack.Find("MSA")->Get(2) == absl::StrCat("RR8-C-", i)) ++accepted;
    });
  }
  for (auto& t : senders) t.join();
  EXPECT_EQ(accepted.load(), 4);
}

// Outbound to an MLLP peer: a message the peer refuses (AE) stays
// unacknowledged and comes again; acknowledged once the peer answers AA.
TEST(ConnectOutbound, AnMllpPeerMustAnswerAaBeforeTheBrokerIsAcked) {
  const std::string dir = FreshDir("connect-peer");
  fs::create_directories(dir + "/agreements");
  // The same flow the other way round: a practice to the trust.
  std::ofstream(dir + "/agreements/gp-to-hospital.yaml")
      << absl::StrReplaceAll(ReadOrDie(SourceDir() + "/deploy/agreements/hospital-to-gp.yaml"),
                             {{"senders: {kinds: [nhs_trust]}", "senders: {kinds: [gp_practice]}"},
                                          {"recipients: {kinds: [gp_practice]}", "recipients: {kinds: [nhs_trust]}"}});
  auto broker = testing::StartBroker(
      testing::ConfigYaml(dir + "/data",
                          absl::StrCat("policy: {agreements_dir: ", dir, "/agreements}\n",
                                       "delivery: {visibility_timeout: 1s}\n"),
                          R"(
organisations:
  - {ods: RR8, name: Leeds Teaching Hospitals NHS Trust, kind: nhs_trust, receives: hl7v2}
  - {ods: Y06601, name: Example GP practice, kind: gp_practice}
)"),
      &SystemClock::Get());
  ASSERT_NE(broker, nullptr);

  // The peer: answers the first message AE and every later one AA.
  int port = 0;
  auto listener = mllp::Listen("127.0.0.1:0", &port);
  ASSERT_TRUE(listener.ok());
  std::vector<std::string> received;
  absl::Mutex mu;
  std::thread peer([&] {
    const int fd = ::accept(*listener, nullptr, nullptr);
    for (int i = 0; i < 2 && fd >= 0; ++i) {
      auto frame = mllp::ReadFrame(fd, 1 << 20, absl::Seconds(20));
      if (!frame.ok()) break;
      {
        absl::MutexLock l(&mu);
        received.push_back(*frame);
      }
      const auto code = i == 0 ? hl7::AckCode::kError : hl7::AckCode::kAccept;
      mllp::WriteAll(fd, mllp::Frame(hl7::MakeAck(*frame, code, {"207", "busy"}, absl::Now(), "PEER")));
    }
    if (fd >= 0) ::close(fd);
  });

  const std::string pki = PkiDir();
  auto config = ParseConnectConfig(absl::StrCat("broker: {target: \"", broker->address(), "\", cert: ", pki,
                                                "/RR8.crt, key: ", pki, "/RR8.key, ca: ", pki, "/ca.crt}\n",
                                                "outbound: {mllp_peer: \"127.0.0.1:", port, "\", retry_backoff: 0.1s}\n"),
                                   "connect.yaml", dir);
  ASSERT_TRUE(config.ok()) << config.status();
  auto connect = Connect::Start(*config);
  ASSERT_TRUE(connect.ok()) << connect.status();

  v1::SendRequest req;
  req.set_recipient("RR8");
  req.set_workflow("HOSPITAL_DISCHARGE");
  req.set_purpose("direct-care");
  req.set_content_type("x-application/hl7-v2+er7");
  req.set_payload(Fixture("adt_a03.hl7"));
  auto practice = testing::StubAs(*broker, "Y06601");
  const std::string id = testing::SendOk(*practice, req);

  for (int i = 0; i < 500 && (*connect)->delivered() < 1; ++i) absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ((*connect)->delivered(), 1);
  peer.join();
  ::close(*listener);
  absl::MutexLock l(&mu);
  ASSERT_EQ(received.size(), 2u) << "refused once, delivered again";
  for (const std::string& f : received) {
    auto m = hl7::Message::Parse(f);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->msh().Get(10), id) << "MSH-10 is the broker's message id";
    EXPECT_EQ(m->msh().Get(9, 2), "A03");
  }
  (*connect)->Stop();
}

TEST(ConnectConfig, TheDeployExampleIsValid) {
  const std::string dir = FreshDir("connect-example");
  fs::create_directories(dir + "/pki");
  for (const char* f : {"RR8.crt", "RR8.key", "ca.crt"}) fs::copy_file(PkiDir() + "/" + f, dir + "/pki/" + f);
  auto c = ParseConnectConfig(ReadOrDie(SourceDir() + "/deploy/config/connect.yaml"), "connect.yaml", dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->mllp().workflows().at("A03"), "HOSPITAL_DISCHARGE");
  EXPECT_EQ(c->outbound().directory(), dir + "/rr8-inbox");
  EXPECT_TRUE(fs::is_directory(dir + "/rr8-inbox"));
}

TEST(ConnectConfig, ErrorsNameTheKey) {
  const std::string pki = PkiDir();
  const std::string broker = absl::StrCat("broker: {target: \"127.0.0.1:1\", cert: ", pki, "/RR8.crt, key: ", pki,
                                          "/RR8.key, ca: ", pki, "/ca.crt}\n");
  const struct {
    std::string yaml;
    const char* says;
  } cases[] = {
      {"broker: {}\n", "broker.target: required"},
      {absl::StrReplaceAll(broker, {{"RR8.crt", "nope.crt"}}), "broker.cert: cannot read"},
      {broker, "nothing to do"},
      {broker + "mllp: {listen: \"127.0.0.1:0\", purpose: direct-care, routes: [registered-gp]}\n", "mllp.workflows"},
      {broker + "mllp: {listen: \"127.0.0.1:0\", workflows: {A03: discharge}, purpose: direct-care, routes: [x]}\n",
       "mllp.workflows.A03"},
      {broker + "mllp: {listen: \"127.0.0.1:0\", workflows: {A03: D}, purpose: direct-care}\n", "mllp.recipients"},
      {broker + "mllp: {listen: \"127.0.0.1:0\", workflows: {A03: D}, purpose: direct-care, routes: [nearest]}\n",
       "mllp.routes"},
      {broker + "outbound: {mllp_peer: nowhere}\n", "outbound.mllp_peer: expected host:port"},
  };
  for (const auto& c : cases) {
    auto config = ParseConnectConfig(c.yaml, "connect.yaml", "/tmp");
    ASSERT_FALSE(config.ok()) << c.yaml;
    EXPECT_THAT(config.status().message(), HasSubstr(c.says)) << c.yaml;
  }
}

}  // namespace
}  // namespace carebroker
