// carebroker-connect against a real broker over mutual TLS: HL7 ADT framed
// over MLLP at a trust reaches the council as council JSON and the GP as
// FHIR; every refusal is answered AE or AR as a hospital system needs.
#include "connect/connect.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include <nlohmann/json.hpp>
#include <openssl/ssl.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_replace.h"
#include "adapters/common/testdata.h"
#include "adapters/hl7v2/adt.h"
#include "adapters/hl7v2/er7.h"
#include "connect/mllp.h"
#include "tests/integration/harness.h"

namespace carebroker {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;
using testing::TempDir;
using testing::PkiDir;

using adapters::ReadOrDie;
using adapters::SourceDir;

std::string Fixture(const std::string& name) { return adapters::Testdata("hl7v2/" + name); }

// The broker section of a connect config, as `who` (a dev-PKI certificate),
// with any `extra` keys (e.g. "timeout: 3s").
std::string BrokerSection(const std::string& target, const std::string& who, const std::string& extra = "") {
  const std::string pki = PkiDir();
  return absl::StrCat("broker: {target: \"", target, "\", cert: ", pki, "/", who, ".crt, key: ", pki, "/", who,
                      ".key, ca: ", pki, "/ca.crt", extra.empty() ? "" : ", ", extra, "}\n");
}

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
    dir_ = TempDir("connect");
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
    return BrokerSection(target.empty() ? broker_->address() : target, who, "timeout: 3s") + body;
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
  // Refused on both routes: nothing stored, an error for each.
  ASSERT_EQ(bad_nhs.FindAll("ERR").size(), 2u);
  EXPECT_THAT(bad_nhs.FindAll("ERR")[0]->Get(3, 2), HasSubstr("route council-of-residence"));
  EXPECT_THAT(bad_nhs.FindAll("ERR")[1]->Get(3, 2), HasSubstr("route registered-gp"));
  EXPECT_EQ(bad_nhs.FindAll("ERR")[1]->Get(4), "E");

  const hl7::Message unmapped = Exchange(trust->mllp_port(), Fixture("adt_a02.hl7"));
  EXPECT_EQ(unmapped.Find("MSA")->Get(1), "AE");
  EXPECT_EQ(unmapped.Find("ERR")->Get(3, 1), "201");

  // Unroutable everywhere (no address, no GP practice): AE.
  std::string nowhere = absl::StrReplaceAll(Fixture("adt_a03.hl7"), {{"LS1 4AP", "ZE1 0AA"}});
  nowhere = absl::StrReplaceAll(nowhere, {{"LEEDS MEDICAL PRACTICE^^Y06601", ""}});
  const hl7::Message unroutable = Exchange(trust->mllp_port(), nowhere);
  EXPECT_EQ(unroutable.Find("MSA")->Get(1), "AE");
  EXPECT_THAT(unroutable.Find("MSA")->Get(3), HasSubstr("UNROUTABLE"));
  EXPECT_EQ(unroutable.FindAll("ERR").size(), 2u);
}

// The ACK says what happened: a copy stored for the GP while the council
// could not be found is AA, with a warning naming the route refused, never
// an AE behind which a copy went out.
TEST_F(ConnectTest, AnAckIsAaWhenACopyWasStoredWithAWarningForEachRouteRefused) {
  auto trust = Trust();
  ASSERT_NE(trust, nullptr);
  const std::string gp_dir = dir_ + "/gp-in";
  auto gp = StartConnect(Yaml("Y06601", "outbound: {directory: " + gp_dir + ", retry_backoff: 0.1s}\n"));
  ASSERT_NE(gp, nullptr);
  const std::string elsewhere = absl::StrReplaceAll(Fixture("adt_a03.hl7"), {{"LS1 4AP", "ZE1 0AA"}});
  const hl7::Message ack = Exchange(trust->mllp_port(), elsewhere);
  EXPECT_EQ(ack.Find("MSA")->Get(1), "AA") << "the GP's copy is stored";
  EXPECT_EQ(ack.Find("MSA")->Get(3), "");
  const auto errs = ack.FindAll("ERR");
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0]->Get(4), "W") << "a warning, not an error";
  EXPECT_THAT(errs[0]->Get(3, 2), HasSubstr("route council-of-residence: UNROUTABLE"));
  EXPECT_EQ(WaitForFiles(gp_dir, 1).size(), 1u);
  // Sent again (the ACK lost): the GP's copy is a duplicate, the warning the same.
  const hl7::Message again = Exchange(trust->mllp_port(), elsewhere);
  EXPECT_EQ(again.Find("MSA")->Get(1), "AA");
  EXPECT_EQ(again.FindAll("ERR").size(), 1u);
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(gp->delivered(), 1);
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
// A broker where a GP practice sends to the trust, which receives HL7 v2;
// the trust's connect delivers outbound.
class ConnectOutboundTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("connect-out");
    fs::create_directories(dir_ + "/agreements");
    // The hospital-to-GP flow the other way round: a practice to the trust.
    std::ofstream(dir_ + "/agreements/gp-to-hospital.yaml") << absl::StrReplaceAll(
        ReadOrDie(SourceDir() + "/deploy/agreements/hospital-to-gp.yaml"),
        {{"senders: {kinds: [nhs_trust]}", "senders: {kinds: [gp_practice]}"},
         {"recipients: {kinds: [gp_practice]}", "recipients: {kinds: [nhs_trust]}"}});
    broker_ = testing::StartBroker(
        testing::ConfigYaml(dir_ + "/data",
                            absl::StrCat("policy: {agreements_dir: ", dir_, "/agreements}\n",
                                         "delivery: {visibility_timeout: 1s, max_attempts: 5}\n"),
                            R"(
organisations:
  - {ods: RR8, name: Leeds Teaching Hospitals NHS Trust, kind: nhs_trust, receives: hl7v2}
  - {ods: Y06601, name: Example GP practice, kind: gp_practice}
)"),
        &SystemClock::Get());
    ASSERT_NE(broker_, nullptr);
  }

  // The trust's connect config with this outbound section.
  absl::StatusOr<v1::ConnectConfig> TrustConfig(const std::string& outbound) {
    return ParseConnectConfig(BrokerSection(broker_->address(), "RR8") + "outbound: " + outbound + "\n",
                              "connect.yaml", dir_);
  }

  // The trust's connect with this outbound section.
  std::unique_ptr<Connect> StartTrust(const std::string& outbound) {
    auto config = TrustConfig(outbound);
    EXPECT_TRUE(config.ok()) << config.status();
    if (!config.ok()) return nullptr;
    auto c = Connect::Start(*config);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  // The practice sends a discharge to the trust; its message id.
  std::string SendToTrust() {
    v1::SendRequest req;
    req.set_recipient("RR8");
    req.set_workflow("HOSPITAL_DISCHARGE");
    req.set_purpose("direct-care");
    req.set_content_type("x-application/hl7-v2+er7");
    req.set_payload(Fixture("adt_a03.hl7"));
    return testing::SendOk(*testing::StubAs(*broker_, "Y06601"), req);
  }

  v1::TrackResponse Track(const std::string& id) {
    grpc::ClientContext ctx;
    v1::TrackRequest req;
    req.set_message_id(id);
    v1::TrackResponse r;
    const grpc::Status s = testing::StubAs(*broker_, "Y06601")->Track(&ctx, req, &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return r;
  }
  v1::MessageStatus StatusOf(const std::string& id) { return Track(id).status(); }

  static void WaitForDelivered(const Connect& c, int64_t n) {
    for (int i = 0; i < 750 && c.delivered() < n; ++i) absl::SleepFor(absl::Milliseconds(20));
  }

  std::string dir_;
  std::unique_ptr<Broker> broker_;
};

TEST_F(ConnectOutboundTest, AnMllpPeerMustAnswerAaBeforeTheBrokerIsAcked) {
  // The peer: answers the first message AR (it may pass later) and every later one AA.
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
      const auto code = i == 0 ? hl7::AckCode::kReject : hl7::AckCode::kAccept;
      mllp::WriteAll(fd, mllp::Frame(hl7::MakeAck(*frame, code, {"207", "busy"}, absl::Now(), "PEER")));
    }
    if (fd >= 0) ::close(fd);
  });

  auto connect = StartTrust(absl::StrCat("{mllp_peer: \"127.0.0.1:", port, "\", retry_backoff: 0.1s}"));
  ASSERT_NE(connect, nullptr);
  const std::string id = SendToTrust();

  WaitForDelivered(*connect, 1);
  EXPECT_EQ(connect->delivered(), 1);
  peer.join();
  ::close(*listener);
  EXPECT_EQ(StatusOf(id), v1::MESSAGE_STATUS_ACKNOWLEDGED);
  absl::MutexLock l(&mu);
  ASSERT_EQ(received.size(), 2u) << "refused once for now, delivered again";
  for (const std::string& f : received) {
    auto m = hl7::Message::Parse(f);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->msh().Get(10), id) << "MSH-10 is the broker's message id";
    EXPECT_EQ(m->msh().Get(9, 2), "A03");
  }
  connect->Stop();
}

// An MLLP peer on loopback answering each message with the next of
// `codes` (then AA), with an ERR segment naming HL7 error 207.
class MllpPeer {
 public:
  explicit MllpPeer(std::vector<hl7::AckCode> codes) : codes_(std::move(codes)) {
    auto fd = mllp::Listen("127.0.0.1:0", &port_);
    EXPECT_TRUE(fd.ok()) << fd.status();
    listen_fd_ = *fd;
    thread_ = std::thread([this] {
      for (size_t i = 0;;) {
        const int conn = ::accept(listen_fd_, nullptr, nullptr);
        if (conn < 0) return;
        while (true) {
          auto frame = mllp::ReadFrame(conn, 1 << 20, absl::Seconds(20));
          if (!frame.ok()) break;
          const auto code = i < codes_.size() ? codes_[i] : hl7::AckCode::kAccept;
          ++i;
          {
            absl::MutexLock l(&mu_);
            received_.push_back(*frame);
          }
          mllp::WriteAll(conn, mllp::Frame(hl7::MakeAck(*frame, code, {"207", "a synthetic error"}, absl::Now(), "PEER")));
        }
        ::close(conn);
      }
    });
  }
  ~MllpPeer() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    ::close(listen_fd_);
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  size_t received() {
    absl::MutexLock l(&mu_);
    return received_.size();
  }

 private:
  std::vector<hl7::AckCode> codes_;
  int port_ = 0;
  int listen_fd_ = -1;
  std::thread thread_;
  absl::Mutex mu_;
  std::vector<std::string> received_ ABSL_GUARDED_BY(mu_);
};

TEST_F(ConnectOutboundTest, AnMllpAeIsRejectedForGoodAndTheNextMessageGoesOut) {
  MllpPeer peer({hl7::AckCode::kError});
  auto connect = StartTrust(absl::StrCat("{mllp_peer: \"", peer.address(), "\", retry_backoff: 0.1s}"));
  ASSERT_NE(connect, nullptr);
  const std::string refused = SendToTrust();
  const std::string next = SendToTrust();
  WaitForDelivered(*connect, 1);
  EXPECT_EQ(connect->delivered(), 1);
  EXPECT_EQ(connect->rejected(), 1);
  EXPECT_EQ(peer.received(), 2u) << "the refused one was not sent again";
  EXPECT_EQ(StatusOf(next), v1::MESSAGE_STATUS_ACKNOWLEDGED);
  const v1::TrackResponse t = Track(refused);
  EXPECT_EQ(t.status(), v1::MESSAGE_STATUS_HELD);
  EXPECT_EQ(t.held_reason(), "REJECTED_BY_RECIPIENT");
  EXPECT_EQ(t.rejection_code(), "AE");
  EXPECT_EQ(t.rejection_text(), "the MLLP peer answered AE (HL7 error 207)") << "never ERR's free text";
  EXPECT_EQ(t.delivery_count(), 1u);
  connect->Stop();
}

TEST_F(ConnectOutboundTest, WhichMllpAnswersAreForGoodIsConfigurable) {
  // This peer answers AR for content it cannot take, and AE when it is down.
  MllpPeer peer({hl7::AckCode::kReject, hl7::AckCode::kError});
  auto connect =
      StartTrust(absl::StrCat("{mllp_peer: \"", peer.address(), "\", retry_backoff: 0.1s, for_good: [AR]}"));
  ASSERT_NE(connect, nullptr);
  const std::string refused = SendToTrust();
  const std::string retried = SendToTrust();
  WaitForDelivered(*connect, 1);
  EXPECT_EQ(connect->rejected(), 1);
  EXPECT_EQ(Track(refused).rejection_code(), "AR");
  EXPECT_EQ(StatusOf(retried), v1::MESSAGE_STATUS_ACKNOWLEDGED) << "AE, then AA on the retry";
  EXPECT_EQ(peer.received(), 3u);
  connect->Stop();
}

// A webhook endpoint on loopback, over HTTPS with the dev PKI's server
// certificate (requiring a client certificate from the CA) or plain HTTP.
// It answers each POST with the next scripted answer, then 200, and keeps
// what arrived.
class Endpoint {
 public:
  struct Request {
    std::string line;                            // e.g. "POST /inbox HTTP/1.1"
    std::map<std::string, std::string> headers;  // names in lower case
    std::string body;
    absl::Time at;
  };

  // `always_500`: a body holding this text is answered 500 every time.
  Endpoint(bool tls, std::deque<std::string> answers, std::string always_500 = "")
      : answers_(std::move(answers)), always_500_(std::move(always_500)) {
    auto fd = mllp::Listen("127.0.0.1:0", &port_);  // a plain TCP listener
    EXPECT_TRUE(fd.ok()) << fd.status();
    listen_fd_ = *fd;
    if (tls) {
      const std::string pki = PkiDir();
      ctx_ = SSL_CTX_new(TLS_server_method());
      EXPECT_EQ(SSL_CTX_use_certificate_chain_file(ctx_, (pki + "/server.crt").c_str()), 1);
      EXPECT_EQ(SSL_CTX_use_PrivateKey_file(ctx_, (pki + "/server.key").c_str(), SSL_FILETYPE_PEM), 1);
      EXPECT_EQ(SSL_CTX_load_verify_locations(ctx_, (pki + "/ca.crt").c_str(), nullptr), 1);
      SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
    acceptor_ = std::thread([this] {
      for (int conn; (conn = ::accept(listen_fd_, nullptr, nullptr)) >= 0;) {
        absl::MutexLock l(&mu_);
        fds_.push_back(conn);
        connections_.emplace_back([this, conn] { Serve(conn); });
      }
    });
  }

  ~Endpoint() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    acceptor_.join();
    std::vector<std::thread> connections;
    {
      absl::MutexLock l(&mu_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
      connections.swap(connections_);
    }
    for (auto& t : connections) t.join();
    for (int fd : fds_) ::close(fd);
    ::close(listen_fd_);
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
  }

  std::string url(const std::string& path) const {
    return absl::StrCat(ctx_ != nullptr ? "https" : "http", "://127.0.0.1:", port_, path);
  }
  std::vector<Request> requests() {
    absl::MutexLock l(&mu_);
    return requests_;
  }
  int failed_handshakes() {
    absl::MutexLock l(&mu_);
    return failed_handshakes_;
  }
  // Waits up to 15 s for the condition on the endpoint.
  bool WaitFor(const std::function<bool(Endpoint&)>& done) {
    for (int i = 0; i < 750; ++i) {
      if (done(*this)) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return done(*this);
  }

 private:
  void Serve(int fd) {
    SSL* ssl = nullptr;
    if (ctx_ != nullptr) {
      ssl = SSL_new(ctx_);
      SSL_set_fd(ssl, fd);
      if (SSL_accept(ssl) != 1) {
        SSL_free(ssl);
        absl::MutexLock l(&mu_);
        ++failed_handshakes_;
        return;
      }
    }
    auto read = [&](char* buf, int n) { return ssl != nullptr ? SSL_read(ssl, buf, n) : ::read(fd, buf, n); };
    auto write = [&](const std::string& s) {
      return ssl != nullptr ? SSL_write(ssl, s.data(), s.size()) : ::write(fd, s.data(), s.size());
    };
    std::string in;
    char buf[16384];
    while (true) {  // one request after another on a kept-alive connection
      size_t head_end;
      while ((head_end = in.find("\r\n\r\n")) == std::string::npos) {
        const int n = read(buf, sizeof buf);
        if (n <= 0) break;
        in.append(buf, n);
      }
      if (head_end == std::string::npos) break;
      Request r;
      std::vector<std::string> lines = absl::StrSplit(in.substr(0, head_end), "\r\n");
      r.line = lines[0];
      for (size_t i = 1; i < lines.size(); ++i) {
        const size_t colon = lines[i].find(':');
        if (colon == std::string::npos) continue;
        r.headers[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
            std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
      }
      size_t length = 0;
      EXPECT_TRUE(absl::SimpleAtoi(r.headers["content-length"], &length)) << r.line;
      in.erase(0, head_end + 4);
      while (in.size() < length) {
        const int n = read(buf, sizeof buf);
        if (n <= 0) break;
        in.append(buf, n);
      }
      if (in.size() < length) break;
      r.body = in.substr(0, length);
      in.erase(0, length);
      r.at = absl::Now();
      std::string answer = "200 OK";
      {
        absl::MutexLock l(&mu_);
        requests_.push_back(std::move(r));
        if (!always_500_.empty() && requests_.back().body.find(always_500_) != std::string::npos) {
          answer = "500 Internal Server Error";
        } else if (!answers_.empty()) {
          answer = answers_.front();
          answers_.pop_front();
        }
      }
      if (write(absl::StrCat("HTTP/1.1 ", answer, "\r\nContent-Length: 2\r\n\r\nok")) <= 0) break;
    }
    if (ssl != nullptr) SSL_free(ssl);
  }

  int port_ = 0;
  int listen_fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  std::thread acceptor_;
  absl::Mutex mu_;
  std::deque<std::string> answers_ ABSL_GUARDED_BY(mu_);
  const std::string always_500_;
  std::vector<Request> requests_ ABSL_GUARDED_BY(mu_);
  int failed_handshakes_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int> fds_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> connections_ ABSL_GUARDED_BY(mu_);
};

TEST_F(ConnectOutboundTest, AWebhookGetsEachMessageOverMutualTlsAndIsRetriedUntil2xx) {
  Endpoint endpoint(/*tls=*/true, {"503 Service Unavailable\r\nRetry-After: 0", "500 Internal Server Error"});
  std::ofstream(dir_ + "/token") << "Bearer synthetic-token\n";
  const std::string pki = PkiDir();
  auto connect = StartTrust(absl::StrCat("{webhook: {url: \"", endpoint.url("/inbox?from=carebroker"), "\", ca: ", pki,
                                         "/ca.crt, cert: ", pki, "/RR8.crt, key: ", pki,
                                         "/RR8.key, authorization_file: token, timeout: 5s}, retry_backoff: 0.1s}"));
  ASSERT_NE(connect, nullptr);
  const std::string id = SendToTrust();

  WaitForDelivered(*connect, 1);
  EXPECT_EQ(connect->delivered(), 1);
  EXPECT_EQ(StatusOf(id), v1::MESSAGE_STATUS_ACKNOWLEDGED);
  const std::vector<Endpoint::Request> got = endpoint.requests();
  ASSERT_EQ(got.size(), 3u) << "503, 500, then 200";
  for (size_t i = 0; i < got.size(); ++i) {
    const Endpoint::Request& r = got[i];
    EXPECT_EQ(r.line, "POST /inbox?from=carebroker HTTP/1.1");
    EXPECT_EQ(r.headers.at("content-type"), "x-application/hl7-v2+er7");
    EXPECT_EQ(r.headers.at("idempotency-key"), id) << "the same key on every retry";
    EXPECT_EQ(r.headers.at("x-carebroker-message-id"), id);
    EXPECT_EQ(r.headers.at("x-carebroker-sender"), "Y06601");
    EXPECT_EQ(r.headers.at("x-carebroker-workflow"), "HOSPITAL_DISCHARGE");
    EXPECT_EQ(r.headers.at("x-carebroker-delivery-count"), absl::StrCat(i + 1));
    EXPECT_EQ(r.headers.at("authorization"), "Bearer synthetic-token");
    auto m = hl7::Message::Parse(r.body);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->msh().Get(10), id);
  }
  EXPECT_EQ(got[0].body, got[2].body);
  connect->Stop();
}

TEST_F(ConnectOutboundTest, AWebhook4xxIsRejectedForGoodBut408IsRetried) {
  Endpoint endpoint(/*tls=*/false, {"422 Unprocessable Content", "408 Request Timeout", "200 OK", "400 Bad Request"});
  auto connect = StartTrust(absl::StrCat("{webhook: {url: \"", endpoint.url("/"), "\"}, retry_backoff: 0.1s}"));
  ASSERT_NE(connect, nullptr);
  auto wait_rejected = [&](int64_t n) {
    for (int i = 0; i < 750 && connect->rejected() < n; ++i) absl::SleepFor(absl::Milliseconds(20));
    return connect->rejected();
  };
  // One at a time, so each meets its answer.
  const std::string first = SendToTrust();
  EXPECT_EQ(wait_rejected(1), 1);
  const std::string second = SendToTrust();
  WaitForDelivered(*connect, 1);
  EXPECT_EQ(connect->delivered(), 1);
  const std::string third = SendToTrust();
  EXPECT_EQ(wait_rejected(2), 2);

  const v1::TrackResponse t = Track(first);
  EXPECT_EQ(t.status(), v1::MESSAGE_STATUS_HELD);
  EXPECT_EQ(t.held_reason(), "REJECTED_BY_RECIPIENT");
  EXPECT_EQ(t.rejection_code(), "HTTP_422");
  EXPECT_EQ(t.rejection_text(), "the webhook answered HTTP 422");
  const v1::TrackResponse retried = Track(second);
  EXPECT_EQ(retried.status(), v1::MESSAGE_STATUS_ACKNOWLEDGED) << "408 may pass later";
  EXPECT_EQ(retried.delivery_count(), 2u);
  EXPECT_EQ(Track(third).rejection_code(), "HTTP_400");
  EXPECT_EQ(endpoint.requests().size(), 4u);
  connect->Stop();
}

TEST_F(ConnectOutboundTest, AMessageThatNeverPassesIsHeldAfterMaxAttemptsAndTheNextGoesOut) {
  // One message fails every time (its MSH-10 is its id); the broker holds it
  // after delivery.max_attempts (5 here), and the others behind it are not
  // charged for its failures.
  const std::string stuck = SendToTrust();
  const std::string next = SendToTrust();
  Endpoint endpoint(/*tls=*/false, {}, /*always_500=*/stuck);
  auto connect = StartTrust(absl::StrCat("{webhook: {url: \"", endpoint.url("/"), "\"}, retry_backoff: 0.05s}"));
  ASSERT_NE(connect, nullptr);
  ASSERT_TRUE(endpoint.WaitFor([&](Endpoint&) { return StatusOf(stuck) == v1::MESSAGE_STATUS_HELD; }));
  WaitForDelivered(*connect, 1);
  EXPECT_EQ(connect->delivered(), 1);
  EXPECT_EQ(connect->rejected(), 0);
  const v1::TrackResponse t = Track(stuck);
  EXPECT_EQ(t.status(), v1::MESSAGE_STATUS_HELD);
  EXPECT_EQ(t.held_reason(), "MAX_ATTEMPTS_REACHED");
  EXPECT_EQ(t.delivery_count(), 5u);
  const v1::TrackResponse n = Track(next);
  EXPECT_EQ(n.status(), v1::MESSAGE_STATUS_ACKNOWLEDGED);
  EXPECT_EQ(n.delivery_count(), 1u) << "never charged for the other's failures";
  connect->Stop();
}

TEST_F(ConnectOutboundTest, AWebhooksRetryAfterIsWaitedFor) {
  // Plain HTTP is allowed to a loopback host (an engine on the same machine).
  Endpoint endpoint(/*tls=*/false, {"429 Too Many Requests\r\nRetry-After: 2"});
  auto connect =
      StartTrust(absl::StrCat("{webhook: {url: \"", endpoint.url("/"), "\"}, retry_backoff: 0.1s}"));
  ASSERT_NE(connect, nullptr);
  const std::string id = SendToTrust();
  WaitForDelivered(*connect, 1);
  EXPECT_EQ(connect->delivered(), 1);
  const std::vector<Endpoint::Request> got = endpoint.requests();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_GE(got[1].at - got[0].at, absl::Seconds(2)) << "not before Retry-After";
  EXPECT_EQ(StatusOf(id), v1::MESSAGE_STATUS_ACKNOWLEDGED);
  connect->Stop();
}

TEST_F(ConnectOutboundTest, AWebhookWithAnUntrustedCertificateGetsNothingAndNothingIsAcked) {
  Endpoint endpoint(/*tls=*/true, {});
  const std::string pki = PkiDir();
  // The endpoint's certificate is checked against the wrong CA.
  auto connect = StartTrust(absl::StrCat("{webhook: {url: \"", endpoint.url("/"), "\", ca: ", pki,
                                         "/rogue-ca.crt, cert: ", pki, "/RR8.crt, key: ", pki,
                                         "/RR8.key}, retry_backoff: 0.1s}"));
  ASSERT_NE(connect, nullptr);
  const std::string id = SendToTrust();
  EXPECT_TRUE(endpoint.WaitFor([](Endpoint& e) { return e.failed_handshakes() >= 2; }));
  EXPECT_TRUE(endpoint.requests().empty());
  EXPECT_EQ(connect->delivered(), 0);
  EXPECT_EQ(StatusOf(id), v1::MESSAGE_STATUS_DELIVERED) << "handed to connect, never acknowledged";
  connect->Stop();
}

TEST_F(ConnectOutboundTest, AWebhookAuthorizationFileMustBeOneLine) {
  std::ofstream(dir_ + "/token") << "Bearer a\nX-Injected: b\n";
  auto config = TrustConfig("{webhook: {url: \"https://127.0.0.1:1/\", authorization_file: token}}");
  ASSERT_TRUE(config.ok()) << config.status();
  auto c = Connect::Start(*config);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("authorization file: expected one line"));
}

TEST(ConnectConfig, TheDeployExampleIsValid) {
  const std::string dir = TempDir("connect-example");
  fs::create_directories(dir + "/pki");
  for (const char* f : {"RR8.crt", "RR8.key", "ca.crt"}) fs::copy_file(PkiDir() + "/" + f, dir + "/pki/" + f);
  auto c = ParseConnectConfig(ReadOrDie(SourceDir() + "/deploy/config/connect.yaml"), "connect.yaml", dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->mllp().workflows().at("A03"), "HOSPITAL_DISCHARGE");
  EXPECT_EQ(c->outbound().directory(), dir + "/rr8-inbox");
  EXPECT_TRUE(fs::is_directory(dir + "/rr8-inbox"));
}

TEST(ConnectConfig, ForGoodDefaultsByOutput) {
  const std::string broker = BrokerSection("127.0.0.1:1", "RR8");
  auto mllp = ParseConnectConfig(broker + "outbound: {mllp_peer: \"127.0.0.1:1\"}\n", "connect.yaml", "/tmp");
  ASSERT_TRUE(mllp.ok()) << mllp.status();
  EXPECT_THAT(mllp->outbound().for_good(), ElementsAre("AE", "CR"));
  auto webhook =
      ParseConnectConfig(broker + "outbound: {webhook: {url: \"https://care.example.nhs.uk/in\"}}\n", "connect.yaml", "/tmp");
  ASSERT_TRUE(webhook.ok()) << webhook.status();
  EXPECT_THAT(webhook->outbound().for_good(), ElementsAre("400-407", "409-428", "430-499"));
  auto none = ParseConnectConfig(broker + "outbound: {mllp_peer: \"127.0.0.1:1\", for_good: [none]}\n",
                                 "connect.yaml", "/tmp");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_THAT(none->outbound().for_good(), ElementsAre("none"));
}

TEST(ConnectConfig, ErrorsNameTheKey) {
  const std::string pki = PkiDir();
  const std::string broker = BrokerSection("127.0.0.1:1", "RR8");
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
      {broker + "outbound: {webhook: {}}\n", "outbound.webhook.url: required"},
      {broker + "outbound: {webhook: {url: \"not a url\"}}\n", "outbound.webhook.url: not a URL"},
      {broker + "outbound: {webhook: {url: \"http://care.example.nhs.uk/in\"}}\n",
       "outbound.webhook.url: http:// only to a loopback host"},
      {broker + "outbound: {webhook: {url: \"ftp://127.0.0.1/in\"}}\n", "outbound.webhook.url: the scheme must be https"},
      {broker + "outbound: {webhook: {url: \"https://u:p@care.example.nhs.uk/in\"}}\n", "no credentials in the URL"},
      {broker + "outbound: {webhook: {url: \"https://care.example.nhs.uk/in\", cert: " + pki + "/RR8.crt}}\n",
       "outbound.webhook.key: cert and key go together"},
      {broker + "outbound: {webhook: {url: \"https://care.example.nhs.uk/in\", ca: nope.pem}}\n",
       "outbound.webhook.ca: cannot read"},
      {broker + "outbound: {webhook: {url: \"https://care.example.nhs.uk/in\"}, for_good: [4xx]}\n",
       "outbound.for_good: '4xx': an HTTP status"},
      {broker + "outbound: {webhook: {url: \"https://care.example.nhs.uk/in\"}, for_good: [499-400]}\n",
       "outbound.for_good: '499-400'"},
      {broker + "outbound: {mllp_peer: \"127.0.0.1:1\", for_good: [AA]}\n", "outbound.for_good: 'AA': an ACK code"},
      {broker + "outbound: {mllp_peer: \"127.0.0.1:1\", for_good: [none, AE]}\n", "none stands alone"},
      {broker + "outbound: {directory: /tmp, for_good: [AE]}\n", "outbound.for_good: only a webhook or an MLLP peer"},
  };
  for (const auto& c : cases) {
    auto config = ParseConnectConfig(c.yaml, "connect.yaml", "/tmp");
    ASSERT_FALSE(config.ok()) << c.yaml;
    EXPECT_THAT(config.status().message(), HasSubstr(c.says)) << c.yaml;
  }
}

}  // namespace
}  // namespace carebroker
