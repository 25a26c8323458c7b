// The metrics and health listener through the real server: plain HTTP on a
// loopback port (libcurl), gRPC health over mutual TLS, a real SQLite file.
// Readiness is tested against a real file system filled under the running
// broker (a tmpfs, which needs root; the test says so and skips when it
// cannot mount one).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mount.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/str_cat.h"
#include "broker/client/client.h"
#include "core/log.h"
#include "core/vocabulary.h"
#include "tests/integration/harness.h"

namespace carebroker::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

class ObservabilityTest : public ::testing::Test {
 protected:
  void Start(const std::string& data_dir, const std::string& extra = "") {
    broker_ = StartBroker(ConfigYaml(data_dir, extra), &clock_);
    ASSERT_NE(broker_, nullptr);
    ASSERT_GT(broker_->metrics_port(), 0);
    trust_ = StubAs(*broker_, "RR8");
    council_ = StubAs(*broker_, "503");
  }
  std::string Metrics() {
    HttpReply r = HttpCall(broker_->metrics_port(), "/metrics");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
    return r.body;
  }

  FakeClock clock_;
  std::unique_ptr<Broker> broker_;
  std::unique_ptr<v1::Exchange::Stub> trust_, council_;
};

TEST_F(ObservabilityTest, MetricsCountWhatHappenedAndHoldNothingAboutAPerson) {
  Start(TempDir("metrics"));
  for (int i = 0; i < 3; ++i) SendOk(*trust_, Req("503"));
  // A care record naming a person: counted, but nothing of it in any label.
  v1::SendRequest care = Req("503");
  care.set_content_type(kCareRecordContentType);
  care.set_payload(SyntheticCareRecord().SerializeAsString());
  SendOk(*trust_, care);
  v1::SendReceipt ignored;
  EXPECT_EQ(Call(&v1::Exchange::Stub::Send, *trust_, Req("ZZZ99"), &ignored).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  clock_.Advance(absl::Seconds(90));
  const std::string waiting = Metrics();
  EXPECT_THAT(waiting, HasSubstr("carebroker_mailbox_depth{recipient=\"503\"} 4\n"));
  EXPECT_THAT(waiting, HasSubstr("carebroker_mailbox_oldest_age_seconds{recipient=\"503\"} 90\n"));
  Receiver rx(*council_, 10);
  for (int i = 0; i < 4; ++i) {
    auto d = rx.Next();
    ASSERT_TRUE(d.has_value());
    rx.Ack(d->message_id());
  }
  EXPECT_TRUE(rx.Close().ok());  // a clean end: every ack is durable

  const std::string text = Metrics();
  EXPECT_THAT(text, HasSubstr("carebroker_messages_accepted_total{workflow=\"HOSPITAL_DISCHARGE\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("carebroker_sends_refused_total{reason=\"UNKNOWN_RECIPIENT\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("carebroker_messages_delivered_total{workflow=\"HOSPITAL_DISCHARGE\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("carebroker_messages_acknowledged_total{workflow=\"HOSPITAL_DISCHARGE\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("carebroker_send_to_commit_seconds_count 4\n"));
  EXPECT_THAT(text, HasSubstr("carebroker_send_to_delivery_seconds_count 4\n"));
  EXPECT_THAT(text, HasSubstr("carebroker_ready 1\n"));
  EXPECT_THAT(text, HasSubstr("carebroker_policy_info{digest=\""));
  EXPECT_THAT(text, HasSubstr("# TYPE carebroker_store_bytes gauge\n"));
  EXPECT_THAT(text, Not(HasSubstr("carebroker_store_bytes 0\n")));
  EXPECT_THAT(text, Not(HasSubstr("carebroker_mailbox_depth{"))) << "every message acknowledged";
  EXPECT_THAT(text, Not(HasSubstr("carebroker_mailbox_held{")));
  // A held message: counted apart from the backlog, which it no longer is.
  v1::RejectRequest reject;
  reject.set_message_id(SendOk(*trust_, Req("503")));
  reject.set_code("AE");
  v1::RejectResponse rejected;
  ASSERT_TRUE(Call(&v1::Exchange::Stub::Reject, *council_, reject, &rejected).ok());
  const std::string held = Metrics();
  EXPECT_THAT(held, HasSubstr("carebroker_mailbox_held{recipient=\"503\"} 1\n"));
  EXPECT_THAT(held, HasSubstr("carebroker_mailbox_depth{recipient=\"503\"} 0\n"));
  EXPECT_THAT(held, Not(HasSubstr("carebroker_mailbox_oldest_age_seconds{recipient=\"503\"}")));
  // Commits that reached disk, the store's one connection, and the clients'
  // connections (the trust's and the council's, at least).
  EXPECT_THAT(text, HasSubstr("carebroker_store_commit_seconds_count "));
  EXPECT_THAT(text, Not(HasSubstr("carebroker_store_commit_seconds_count 0\n")));
  EXPECT_THAT(text, HasSubstr("carebroker_store_connections{state=\"up\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("carebroker_store_connections{state=\"down\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("carebroker_store_queued_operations "));
  const size_t at = text.find("\ncarebroker_connections ");
  ASSERT_NE(at, std::string::npos) << "channelz answers";
  EXPECT_GE(std::stod(text.substr(at + 24)), 2);
  EXPECT_THAT(text, Not(HasSubstr(kSyntheticNhs)));
  EXPECT_THAT(text, Not(HasSubstr("Synthetic")));
}

TEST_F(ObservabilityTest, LogsAreJsonLinesThatNameNothingAboutAPerson) {
  // Every distinctive value of this synthetic person must stay out of the
  // log and out of every error a caller sees, at the most verbose level.
  const std::vector<std::string> personal = {
      kSyntheticNhs, "9434765918", "Xanthippe", "Fotheringay-Zorn", "77 Zanzibar Crescent", "Quarrendon",
      "ZE2 9QX", "1931", "MRN-QX-4471", "SYN-CONSULTANT-9", "Dementia-QX"};
  LogCapture logs;
  Start(TempDir("logs"), "log: {level: debug}\n");
  v1::CareRecord r = SyntheticCareRecord();
  v1::Person* p = r.mutable_person();
  p->mutable_names(0)->add_given("Xanthippe");
  p->mutable_names(0)->set_family("Fotheringay-Zorn");
  p->mutable_address()->add_lines("77 Zanzibar Crescent");
  p->mutable_address()->set_city("Quarrendon");
  p->mutable_address()->set_postcode("ZE2 9QX");
  p->mutable_birth_date()->set_year(1931);
  p->mutable_local_identifiers(0)->set_value("MRN-QX-4471");
  p->mutable_social_care()->set_dementia("Dementia-QX");
  std::vector<grpc::Status> answers;
  v1::SendReceipt receipt;
  auto send = [&](const v1::SendRequest& req) {
    answers.push_back(Call(&v1::Exchange::Stub::Send, *trust_, req, &receipt));
    return answers.back();
  };
  ASSERT_TRUE(send(CareSend("503", "HOSPITAL_DISCHARGE", "direct-care", r)).ok());
  const std::string accepted = receipt.message_id();
  EXPECT_FALSE(send(CareSend("503", "HOSPITAL_DISCHARGE", "research", r)).ok());  // no agreement
  v1::CareRecord bad = r;
  bad.mutable_person()->set_nhs_number("9434765918");  // fails Modulus 11
  EXPECT_FALSE(send(CareSend("503", "HOSPITAL_DISCHARGE", "direct-care", bad)).ok());
  v1::SendRequest torn = CareSend("503", "HOSPITAL_DISCHARGE", "direct-care", r);
  torn.mutable_payload()->resize(torn.payload().size() / 2);  // a record cut short
  EXPECT_FALSE(send(torn).ok());
  v1::SendRequest opaque = Req("ZZZ99", "", "{\"name\": \"Xanthippe Fotheringay-Zorn\"}");
  EXPECT_FALSE(send(opaque).ok());  // unknown recipient
  {
    Receiver rx(*council_, 10);
    auto d = rx.Next();
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->message_id(), accepted);
    EXPECT_TRUE(rx.Ack(accepted));
    EXPECT_TRUE(rx.Close().ok());
  }
  broker_.reset();  // every line written
  SetLogLevel(LogLevel::kInfo);  // for the tests after this one

  std::set<std::string> events;
  for (const std::string& line : logs.lines()) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << "not one JSON object: " << line;
    for (const char* key : {"time", "level", "program", "event"}) EXPECT_TRUE(j.contains(key)) << key << ": " << line;
    events.insert(j.value("event", ""));
    for (const std::string& value : personal) EXPECT_THAT(line, Not(HasSubstr(value))) << "in the log";
  }
  for (const char* e : {"broker.started", "message.accepted", "message.refused", "message.delivered",
                        "message.acknowledged", "broker.stopped"}) {
    EXPECT_TRUE(events.count(e)) << e << " is logged at debug";
  }
  for (const grpc::Status& s : answers) {
    for (const std::string& value : personal) EXPECT_THAT(s.error_message(), Not(HasSubstr(value))) << "in an error";
  }
}

TEST_F(ObservabilityTest, HealthAndReadinessAnswerPlainHttp) {
  Start(TempDir("health"));
  const int port = broker_->metrics_port();
  EXPECT_EQ(HttpCall(port, "/healthz").status, 200);
  HttpReply ready = HttpCall(port, "/readyz");
  EXPECT_EQ(ready.status, 200);
  EXPECT_EQ(ready.body, "ready\n");
  EXPECT_EQ(HttpCall(port, "/readyz?verbose=1").status, 200) << "a query string is ignored";
  EXPECT_EQ(HttpCall(port, "/metrics", "HEAD").status, 200);
  // Wrong requests get a clear status, and the listener keeps serving.
  HttpReply missing = HttpCall(port, "/admin");
  EXPECT_EQ(missing.status, 404);
  EXPECT_THAT(missing.body, HasSubstr("/metrics, /healthz or /readyz"));
  EXPECT_EQ(HttpCall(port, "/metrics", "POST", "x").status, 405);
  EXPECT_EQ(HttpCall(port, "/metrics", "POST", std::string(100 << 10, 'x')).status, 413);
  EXPECT_EQ(HttpCall(port, "/healthz").status, 200);
  EXPECT_EQ(HealthStatus(ChannelAs(*broker_, "operator")), 1);
}

TEST_F(ObservabilityTest, ASecondBrokerOnATakenMetricsPortDoesNotStart) {
  Start(TempDir("first"));
  const std::string yaml = ConfigYaml(TempDir("second"), absl::StrCat("metrics: {listen: \"127.0.0.1:",
                                                                       broker_->metrics_port(), "\"}\n"));
  auto config = ParseConfig(yaml, "test.yaml", "/", {});
  ASSERT_TRUE(config.ok()) << config.status();
  auto second = Broker::Start(*std::move(config), {.clock = &clock_});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("cannot listen on 127.0.0.1:"));
  EXPECT_EQ(HttpCall(broker_->metrics_port(), "/healthz").status, 200) << "the first keeps serving";
}

// The store's file system filled under the running broker (a tmpfs of its
// own): readiness, gRPC health and /readyz say NOT_SERVING with the reason,
// sends are refused with UNAVAILABLE, and all of it recovers by itself when
// space returns, with every message accepted before still delivered.
TEST_F(ObservabilityTest, ReadinessFollowsWhetherTheStoreCanBeWritten) {
  const std::string mnt = TempDir("full");
  if (mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=32m") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (needs root): " << std::strerror(errno);
  }
  struct Unmount {
    std::string at;
    ~Unmount() { umount2(at.c_str(), MNT_DETACH); }
  } unmount{mnt};
  Start(mnt + "/data");
  std::vector<std::string> accepted = {SendOk(*trust_, Req("503"))};
  ASSERT_TRUE(broker_->CheckReadiness().ok());

  // Fill the file system to the last block.
  const std::string filler = mnt + "/filler";
  {
    std::FILE* f = std::fopen(filler.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    static const char kBlock[1 << 16] = {};
    while (std::fwrite(kBlock, 1, sizeof kBlock, f) == sizeof kBlock) {
    }
    std::fclose(f);
  }
  const absl::Status down = broker_->CheckReadiness();
  EXPECT_EQ(down.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ReasonOf(down), "STORE_UNAVAILABLE");
  EXPECT_THAT(std::string(down.message()), HasSubstr("No space left on device"));
  HttpReply ready = HttpCall(broker_->metrics_port(), "/readyz");
  EXPECT_EQ(ready.status, 503);
  EXPECT_THAT(ready.body, HasSubstr("not ready: the store's folder"));
  EXPECT_EQ(HealthStatus(ChannelAs(*broker_, "operator")), 2);  // NOT_SERVING
  EXPECT_THAT(Metrics(), HasSubstr("carebroker_ready 0\n"));
  // Sends are refused once the store's log cannot grow (a few may still
  // fit in space SQLite had already taken); each refusal is UNAVAILABLE.
  grpc::Status refused;
  for (int i = 0; i < 64 && refused.ok(); ++i) {
    v1::SendReceipt r;
    refused = Call(&v1::Exchange::Stub::Send, *trust_, Req("503", "", absl::StrCat("{\"pad\":\"", std::string(256 << 10, 'x'), "\"}")), &r);
    if (refused.ok()) accepted.push_back(r.message_id());
  }
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << DescribeStatus(refused);

  ASSERT_EQ(std::remove(filler.c_str()), 0);
  EXPECT_TRUE(broker_->CheckReadiness().ok());
  EXPECT_EQ(HttpCall(broker_->metrics_port(), "/readyz").status, 200);
  EXPECT_EQ(HealthStatus(ChannelAs(*broker_, "operator")), 1);
  // The store takes writes again by itself.
  std::string after;
  for (int attempt = 0; attempt < 50 && after.empty(); ++attempt) {
    v1::SendReceipt r;
    if (Call(&v1::Exchange::Stub::Send, *trust_, Req("503"), &r).ok()) {
      after = r.message_id();
    } else {
      absl::SleepFor(absl::Milliseconds(100));
    }
  }
  ASSERT_FALSE(after.empty()) << "the store did not recover";
  accepted.push_back(after);
  Receiver rx(*council_, 100);
  std::vector<std::string> got;
  while (auto d = rx.Next(absl::Seconds(2))) {
    got.push_back(d->message_id());
    rx.Ack(d->message_id());
  }
  EXPECT_THAT(got, ::testing::UnorderedElementsAreArray(accepted)) << "every accepted message, once";
  EXPECT_TRUE(rx.Close().ok());
}

}  // namespace
}  // namespace carebroker::testing
