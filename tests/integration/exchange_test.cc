// The exchange through the real server: real gRPC on a loopback port, real
// mutual TLS with the dev PKI, a real SQLite file. Time is a FakeClock.
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/vocabulary.h"
#include "broker/client/client.h"
#include "broker/exchange/intake.h"
#include "carebroker/v1/record.pb.h"
#include "tests/integration/harness.h"
#include "tests/integration/probe.pb.h"

namespace carebroker::testing {
namespace {

grpc::Status SendStatus(v1::Exchange::Stub& stub, const v1::SendRequest& req, v1::SendReceipt* out = nullptr) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::SendReceipt r;
  grpc::Status s = stub.Send(&ctx, req, &r);
  if (out) *out = r;
  return s;
}

grpc::Status TrackStatus(v1::Exchange::Stub& stub, const std::string& id, v1::TrackResponse* out = nullptr) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::TrackRequest req;
  req.set_message_id(id);
  v1::TrackResponse r;
  grpc::Status s = stub.Track(&ctx, req, &r);
  if (out) *out = r;
  return s;
}

v1::TrackResponse Tracked(v1::Exchange::Stub& stub, const std::string& id) {
  v1::TrackResponse r;
  grpc::Status s = TrackStatus(stub, id, &r);
  EXPECT_TRUE(s.ok()) << DescribeStatus(s);
  return r;
}

class ExchangeTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(); }
  void Start(const std::string& extra = "", const std::string& orgs = "") {
    if (data_dir_.empty()) data_dir_ = TempDir("exchange");
    broker_ = StartBroker(ConfigYaml(data_dir_, extra, orgs), &clock_);
    ASSERT_NE(broker_, nullptr);
    trust_ = StubAs(*broker_, "RR8");
    council_ = StubAs(*broker_, "503");
  }
  void Restart(const std::string& extra = "", const std::string& orgs = "") {
    broker_.reset();
    Start(extra, orgs);
  }

  FakeClock clock_;
  std::string data_dir_;
  std::unique_ptr<Broker> broker_;
  std::unique_ptr<v1::Exchange::Stub> trust_, council_;
};

TEST_F(ExchangeTest, SendReceiveAckTrack) {
  v1::SendRequest req = Req("503", "adt-1", "{\"event\":\"discharge\"}");
  req.set_local_reference("MSG0001");
  const std::string id = SendOk(*trust_, req);
  ASSERT_EQ(id.size(), 32u);
  EXPECT_EQ(Tracked(*trust_, id).status(), v1::MESSAGE_STATUS_ACCEPTED);

  Receiver rx(*council_, 10);
  auto d = rx.Next();
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->message_id(), id);
  EXPECT_EQ(d->sender(), "RR8");  // from the certificate, never from the request
  EXPECT_EQ(d->workflow(), "HOSPITAL_DISCHARGE");
  EXPECT_EQ(d->purpose(), "direct-care");
  EXPECT_EQ(d->content_type(), "application/json");
  EXPECT_EQ(d->payload(), "{\"event\":\"discharge\"}");
  EXPECT_EQ(d->local_reference(), "MSG0001");
  EXPECT_EQ(d->delivery_count(), 1u);
  EXPECT_EQ(d->kind(), v1::MESSAGE_KIND_DATA);
  EXPECT_EQ(Tracked(*trust_, id).status(), v1::MESSAGE_STATUS_DELIVERED);

  ASSERT_TRUE(rx.Ack(id));
  grpc::Status end = rx.Close();  // a clean close means the ack is durable
  EXPECT_TRUE(end.ok()) << DescribeStatus(end);
  v1::TrackResponse t = Tracked(*trust_, id);
  EXPECT_EQ(t.status(), v1::MESSAGE_STATUS_ACKNOWLEDGED);
  EXPECT_TRUE(t.has_acknowledged_at());
  EXPECT_TRUE(t.has_first_delivered_at());
  EXPECT_EQ(t.delivery_count(), 1u);
  // The recipient may track it too.
  EXPECT_EQ(Tracked(*council_, id).status(), v1::MESSAGE_STATUS_ACKNOWLEDGED);
}

TEST_F(ExchangeTest, UnaryAckAndPerIdResults) {
  const std::string id = SendOk(*trust_, Req("503"));
  grpc::ClientContext ctx;
  v1::AckRequest req;
  req.add_message_ids(id);
  req.add_message_ids("0123456789abcdef0123456789abcdef");
  v1::AckResponse resp;
  ASSERT_TRUE(council_->Ack(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.acknowledged_size(), 1);
  EXPECT_EQ(resp.acknowledged(0), id);
  ASSERT_EQ(resp.not_found_size(), 1);

  grpc::ClientContext bad;
  v1::AckRequest malformed;
  malformed.add_message_ids("not-an-id");
  grpc::Status s = council_->Ack(&bad, malformed, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ErrorReason(s), "MESSAGE_ID_INVALID");
}

TEST_F(ExchangeTest, TrackTakesAnIdOrAnIdempotencyKeyNotBoth) {
  const std::string id = SendOk(*trust_, Req("503", "key-7"));
  auto track = [&](const std::string& message_id, const std::string& key, v1::TrackResponse* out) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::TrackRequest req;
    req.set_message_id(message_id);
    req.set_idempotency_key(key);
    return trust_->Track(&ctx, req, out);
  };
  v1::TrackResponse r;
  ASSERT_TRUE(track("", "key-7", &r).ok());
  EXPECT_EQ(r.message_id(), id);
  EXPECT_EQ(r.status(), v1::MESSAGE_STATUS_ACCEPTED);
  grpc::Status s = track(id, "key-7", &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ErrorReason(s), "MESSAGE_ID_INVALID");
  s = track("", "", &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  s = track("", std::string(129, 'k'), &r);
  EXPECT_EQ(ErrorReason(s), "IDEMPOTENCY_KEY_INVALID");
  s = track("", "key-8", &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ExchangeTest, SendStreamPipelinesAndAnswersInOrder) {
  grpc::ClientContext ctx;
  auto stream = trust_->SendStream(&ctx);
  constexpr int kN = 300;
  std::thread writer([&] {
    for (int i = 0; i < kN; ++i) {
      // Every 50th request is malformed: its error comes back in its place.
      v1::SendRequest r = Req(i % 50 == 49 ? "999" : "503", absl::StrCat("s-", i), absl::StrCat("{\"i\":", i, "}"));
      if (!stream->Write(r)) break;
    }
    stream->WritesDone();
  });
  std::vector<std::string> ids;
  int errors = 0, n = 0, responses = 0;
  v1::SendStreamResponse resp;
  while (stream->Read(&resp)) {
    ++responses;
    for (const auto& result : resp.results()) {
      if (n % 50 == 49) {
        EXPECT_TRUE(result.has_error()) << n;
        EXPECT_EQ(result.error().reason(), "UNKNOWN_RECIPIENT");
        EXPECT_EQ(result.error().code(), static_cast<int>(grpc::StatusCode::FAILED_PRECONDITION));
        ++errors;
      } else {
        EXPECT_TRUE(result.has_receipt()) << n;
        ids.push_back(result.receipt().message_id());
      }
      ++n;
    }
  }
  EXPECT_GE(responses, 1);
  writer.join();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(n, kN);
  EXPECT_EQ(errors, kN / 50);

  Receiver rx(*council_, 100);
  std::vector<std::string> got;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto d = rx.Next();
    ASSERT_TRUE(d.has_value()) << "delivery " << i;
    got.push_back(d->message_id());
    rx.Ack(d->message_id());
  }
  EXPECT_EQ(got, ids);  // oldest first
  EXPECT_TRUE(rx.Close().ok());
}

TEST_F(ExchangeTest, IdempotentRetryReturnsFirstIdAndDeliversOnce) {
  v1::SendReceipt first, retry;
  ASSERT_TRUE(SendStatus(*trust_, Req("503", "adt-42", "{}"), &first).ok());
  ASSERT_TRUE(SendStatus(*trust_, Req("503", "adt-42", "{}"), &retry).ok());
  EXPECT_EQ(retry.message_id(), first.message_id());
  EXPECT_TRUE(retry.duplicate());
  EXPECT_FALSE(first.duplicate());

  grpc::Status reused = SendStatus(*trust_, Req("503", "adt-42", "{\"other\":1}"));
  EXPECT_EQ(reused.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(ErrorReason(reused), "IDEMPOTENCY_KEY_REUSED");

  Receiver rx(*council_, 10);
  auto d = rx.Next();
  ASSERT_TRUE(d.has_value());
  rx.Ack(d->message_id());
  EXPECT_FALSE(rx.Next(absl::Milliseconds(300)).has_value());
  rx.Close();
}

TEST_F(ExchangeTest, UnknownRecipientIsFailedPreconditionAndStoresNothing) {
  grpc::Status s = SendStatus(*trust_, Req("ZZZ99"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ErrorReason(s), "UNKNOWN_RECIPIENT");
  // A sweep of everything shows nothing was stored.
  auto sweep = broker_->SweepNow();
  ASSERT_TRUE(sweep.ok());
  clock_.Advance(absl::Hours(24 * 6));
  sweep = broker_->SweepNow();
  EXPECT_EQ(sweep->expired, 0);
}

TEST_F(ExchangeTest, MalformedRequestsAreInvalidArgumentWithReasons) {
  struct Case {
    std::function<void(v1::SendRequest&)> mutate;
    const char* reason;
  } cases[] = {
      {[](auto& r) { r.set_workflow("hospital discharge"); }, "WORKFLOW_INVALID"},
      {[](auto& r) { r.set_workflow("NON_DELIVERY_REPORT"); }, "WORKFLOW_INVALID"},
      {[](auto& r) { r.set_purpose("Direct Care"); }, "PURPOSE_INVALID"},
      {[](auto& r) { r.set_recipient("rr8"); }, "RECIPIENT_INVALID"},
      {[](auto& r) { r.set_content_type(""); }, "CONTENT_TYPE_INVALID"},
      {[](auto& r) { r.set_payload(""); }, "PAYLOAD_EMPTY"},
      {[](auto& r) { r.set_idempotency_key(std::string(129, 'k')); }, "IDEMPOTENCY_KEY_INVALID"},
      {[](auto& r) {
         r.set_content_type(kCareRecordContentType);
         r.set_payload("\xff\xff\xff not a protobuf");
       },
       "PAYLOAD_MALFORMED"},
      {[](auto& r) {
         v1::CareRecord rec;
         rec.mutable_person()->set_nhs_number("9912003890");  // fails Modulus 11
         r.set_content_type(kCareRecordContentType);
         r.set_payload(rec.SerializeAsString());
       },
       "NHS_NUMBER_INVALID"},
  };
  for (const auto& c : cases) {
    v1::SendRequest r = Req("503");
    c.mutate(r);
    grpc::Status s = SendStatus(*trust_, r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.reason;
    EXPECT_EQ(ErrorReason(s), c.reason);
    // No patient data in the message: the NHS number is never echoed.
    EXPECT_EQ(s.error_message().find("9912003890"), std::string::npos);
  }
  Receiver rx(*council_, 10);
  EXPECT_FALSE(rx.Next(absl::Milliseconds(300)).has_value()) << "a refused message was stored";
}

TEST_F(ExchangeTest, CanonicalRecordWithValidNhsNumberIsAccepted) {
  v1::CareRecord rec;
  rec.mutable_person()->set_nhs_number("9434765919");
  rec.add_events()->mutable_discharge()->set_discharge_destination("19");
  v1::SendRequest r = Req("503");
  r.set_content_type(kCareRecordContentType);
  r.set_payload(rec.SerializeAsString());
  EXPECT_TRUE(SendStatus(*trust_, r).ok());
}

TEST_F(ExchangeTest, OversizedMessageIsResourceExhausted) {
  Restart("limits: {max_message_bytes: 4096, memory_budget_bytes: 1048576}\n");
  grpc::Status s = SendStatus(*trust_, Req("503", "", std::string(4097, 'x')));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ErrorReason(s), "MESSAGE_TOO_LARGE");
  // Far past the limit, gRPC itself refuses the frame.
  s = SendStatus(*trust_, Req("503", "", std::string(1 << 20, 'x')));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(SendStatus(*trust_, Req("503", "", std::string(4096, 'x'))).ok());
}

TEST_F(ExchangeTest, CrossOrganisationAccessIsRefused) {
  const std::string id = SendOk(*trust_, Req("503"));
  auto other = StubAs(*broker_, "511");
  // Another council cannot see, track or acknowledge 503's message.
  grpc::Status t = TrackStatus(*other, id);
  EXPECT_EQ(t.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ErrorReason(t), "MESSAGE_NOT_FOUND");
  grpc::ClientContext ctx;
  v1::AckRequest ack;
  ack.add_message_ids(id);
  v1::AckResponse resp;
  ASSERT_TRUE(other->Ack(&ctx, ack, &resp).ok());
  EXPECT_EQ(resp.not_found_size(), 1);
  Receiver rx(*other, 10);
  EXPECT_FALSE(rx.Next(absl::Milliseconds(300)).has_value());
  rx.Close();
  // The sender cannot acknowledge on the recipient's behalf.
  grpc::ClientContext ctx2;
  ASSERT_TRUE(trust_->Ack(&ctx2, ack, &resp).ok());
  EXPECT_EQ(Tracked(*trust_, id).status(), v1::MESSAGE_STATUS_ACCEPTED);
}

TEST_F(ExchangeTest, RolesAreEnforcedPerRpc) {
  for (const char* who : {"ig-officer", "operator"}) {
    auto stub = StubAs(*broker_, who);
    grpc::Status s = SendStatus(*stub, Req("503"));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << who;
    EXPECT_EQ(ErrorReason(s), "ROLE_NOT_ALLOWED");
    Receiver rx(*stub, 1);
    grpc::Status end = rx.Close();
    EXPECT_EQ(end.error_code(), grpc::StatusCode::PERMISSION_DENIED) << who;
    EXPECT_EQ(TrackStatus(*stub, "0123456789abcdef0123456789abcdef").error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
}

TEST_F(ExchangeTest, UnregisteredOrganisationIsRefused) {
  Restart("", R"(
organisations:
  - {ods: RR8, name: Leeds Teaching Hospitals NHS Trust, kind: nhs_trust}
  - {ods: "503", name: Lincolnshire County Council, kind: local_authority}
)");
  auto stub = StubAs(*broker_, "511");
  grpc::Status s = SendStatus(*stub, Req("503"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ErrorReason(s), "UNKNOWN_ORGANISATION");
}

TEST_F(ExchangeTest, RefusedCertificatesFailTheHandshake) {
  const std::string pki = PkiDir();
  auto try_with = [&](const std::string& cert, const std::string& key) {
    grpc::SslCredentialsOptions o;
    std::ifstream ca(pki + "/ca.crt");
    o.pem_root_certs.assign(std::istreambuf_iterator<char>(ca), {});
    if (!cert.empty()) {
      std::ifstream c(pki + "/" + cert), k(pki + "/" + key);
      o.pem_cert_chain.assign(std::istreambuf_iterator<char>(c), {});
      o.pem_private_key.assign(std::istreambuf_iterator<char>(k), {});
    }
    auto stub = v1::Exchange::NewStub(grpc::CreateChannel(broker_->address(), grpc::SslCredentials(o)));
    return SendStatus(*stub, Req("503"));
  };
  EXPECT_TRUE(try_with("RR8.crt", "RR8.key").ok());  // control
  for (auto [cert, key] : {std::pair{"", ""},  // no certificate at all
                           std::pair{"rogue.crt", "rogue.key"}, std::pair{"expired.crt", "expired.key"},
                           std::pair{"future.crt", "future.key"}, std::pair{"revoked.crt", "revoked.key"}}) {
    grpc::Status s = try_with(cert, key);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << (*cert ? cert : "no certificate");
  }
  Receiver rx(*council_, 10);
  auto d = rx.Next();  // only the control message arrived
  ASSERT_TRUE(d.has_value());
  rx.Ack(d->message_id());
  EXPECT_FALSE(rx.Next(absl::Milliseconds(300)).has_value());
  rx.Close();
}

TEST_F(ExchangeTest, RestartKeepsUnackedMessagesAndRedelivers) {
  const std::string id = SendOk(*trust_, Req("503", "k"));
  {
    Receiver rx(*council_, 10);
    auto d = rx.Next();
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->delivery_count(), 1u);
    // Not acknowledged: the broker restarts underneath the stream.
    Restart();
  }
  Receiver rx(*council_, 10);
  auto d = rx.Next();
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->message_id(), id);
  EXPECT_EQ(d->delivery_count(), 2u);
  rx.Ack(id);
  EXPECT_TRUE(rx.Close().ok());
  // Idempotency survives the restart too.
  v1::SendReceipt again;
  ASSERT_TRUE(SendStatus(*trust_, Req("503", "k"), &again).ok());
  EXPECT_TRUE(again.duplicate());
  EXPECT_EQ(again.message_id(), id);
}

TEST_F(ExchangeTest, ClosedStreamReleasesUnackedAtOnce) {
  const std::string id = SendOk(*trust_, Req("503"));
  {
    Receiver rx(*council_, 10);
    ASSERT_TRUE(rx.Next().has_value());
    EXPECT_TRUE(rx.Close().ok());
  }
  Receiver rx(*council_, 10);
  auto d = rx.Next();  // no visibility timeout wait: released on stream end
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->message_id(), id);
  EXPECT_EQ(d->delivery_count(), 2u);
  rx.Close();
}

TEST_F(ExchangeTest, UnackedDeliveryIsRedeliveredAfterVisibilityTimeout) {
  const std::string id = SendOk(*trust_, Req("503"));
  Receiver rx(*council_, 10);
  ASSERT_TRUE(rx.Next().has_value());
  broker_->WakeAll();
  EXPECT_FALSE(rx.Next(absl::Milliseconds(300)).has_value());  // hidden while claimed
  clock_.Advance(absl::Seconds(31));
  broker_->WakeAll();
  auto d = rx.Next();
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->message_id(), id);
  EXPECT_EQ(d->delivery_count(), 2u);
  rx.Ack(id);
  rx.Close();
}

TEST_F(ExchangeTest, InFlightLimitGivesBackpressure) {
  for (int i = 0; i < 5; ++i) SendOk(*trust_, Req("503"));
  Receiver rx(*council_, 2);
  auto a = rx.Next();
  auto b = rx.Next();
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(rx.Next(absl::Milliseconds(300)).has_value()) << "more than max_in_flight unacked";
  rx.Ack(a->message_id());
  auto c = rx.Next();
  ASSERT_TRUE(c.has_value());
  EXPECT_FALSE(rx.Next(absl::Milliseconds(300)).has_value());
  rx.Ack(b->message_id());
  rx.Ack(c->message_id());
  int rest = 0;
  while (auto d = rx.Next(absl::Seconds(2))) {
    rx.Ack(d->message_id());
    if (++rest == 2) break;
  }
  EXPECT_EQ(rest, 2);
  rx.Close();
}

TEST_F(ExchangeTest, MessagesSentToAnOpenStreamArriveOnceInOrder) {
  Receiver rx(*council_, 50);
  EXPECT_FALSE(rx.Next(absl::Milliseconds(100)).has_value());  // the stream has drained its mailbox
  std::vector<std::string> sent, got;
  for (int round = 0; round < 3; ++round) {
    // One at a time (each received before the next is sent), then a burst.
    for (int i = 0; i < 5; ++i) {
      sent.push_back(SendOk(*trust_, Req("503", absl::StrCat("one-", round, "-", i))));
      auto d = rx.Next();
      ASSERT_TRUE(d.has_value());
      EXPECT_EQ(d->delivery_count(), 1u);
      got.push_back(d->message_id());
      rx.Ack(d->message_id());
    }
    for (int i = 0; i < 20; ++i) sent.push_back(SendOk(*trust_, Req("503", absl::StrCat("burst-", round, "-", i))));
    for (int i = 0; i < 20; ++i) {
      auto d = rx.Next();
      ASSERT_TRUE(d.has_value());
      got.push_back(d->message_id());
      rx.Ack(d->message_id());
    }
  }
  EXPECT_EQ(got, sent);
  EXPECT_FALSE(rx.Next(absl::Milliseconds(300)).has_value()) << "a message was delivered twice";
  EXPECT_TRUE(rx.Close().ok());
  for (const auto& id : sent) EXPECT_EQ(Tracked(*trust_, id).status(), v1::MESSAGE_STATUS_ACKNOWLEDGED);
}

// A stream draining a backlog through a small window while the same sender
// keeps sending, one send at a time, and wake-ups (the housekeeping tick's
// claims) keep coming: every message arrives once, in the order sent, so
// direct deliveries taken during claims never overtake stored messages.
TEST_F(ExchangeTest, BacklogAndNewSendsArriveOnceInOrderThroughASmallWindow) {
  std::vector<std::string> sent, got;
  for (int i = 0; i < 30; ++i) sent.push_back(SendOk(*trust_, Req("503", absl::StrCat("stored-", i))));
  absl::Mutex mu;
  std::thread sender([&] {
    for (int i = 0; i < 60; ++i) {
      std::string id = SendOk(*trust_, Req("503", absl::StrCat("live-", i)));
      absl::MutexLock l(&mu);
      sent.push_back(std::move(id));
    }
  });
  Receiver rx(*council_, 4);
  for (int i = 0; i < 90; ++i) {
    auto d = rx.Next();
    if (!d.has_value()) break;
    EXPECT_EQ(d->delivery_count(), 1u);
    got.push_back(d->message_id());
    rx.Ack(d->message_id());
    if (i % 7 == 0) broker_->WakeAll();
  }
  sender.join();
  EXPECT_EQ(got, sent);
  EXPECT_FALSE(rx.Next(absl::Milliseconds(300)).has_value()) << "a message was delivered twice";
  EXPECT_TRUE(rx.Close().ok());
}

TEST_F(ExchangeTest, DeliveredButUnackedOnAnOpenStreamComesBackAfterItEnds) {
  auto rx = std::make_unique<Receiver>(*council_, 10);
  EXPECT_FALSE(rx->Next(absl::Milliseconds(100)).has_value());
  const std::string id = SendOk(*trust_, Req("503"));
  auto d = rx->Next();
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->message_id(), id);
  EXPECT_EQ(Tracked(*trust_, id).status(), v1::MESSAGE_STATUS_DELIVERED);
  rx.reset();  // cancelled without an ack
  Receiver again(*council_, 10);
  auto d2 = again.Next();
  ASSERT_TRUE(d2.has_value());
  EXPECT_EQ(d2->message_id(), id);
  EXPECT_EQ(d2->delivery_count(), 2u);
  again.Ack(id);
  EXPECT_TRUE(again.Close().ok());
}

TEST_F(ExchangeTest, ExpiryMakesNonDeliveryReportForSender) {
  v1::SendRequest r = Req("503", "exp-1");
  r.set_local_reference("LOCAL-7");
  const std::string id = SendOk(*trust_, r);
  clock_.Advance(absl::Hours(24 * 5) + absl::Seconds(1));
  auto sweep = broker_->SweepNow();
  ASSERT_TRUE(sweep.ok());
  EXPECT_EQ(sweep->expired, 1);
  EXPECT_EQ(sweep->reports, 1);
  EXPECT_THAT(HttpCall(broker_->metrics_port(), "/metrics").body,  // the sweep counted it
              ::testing::HasSubstr("carebroker_messages_expired_total{workflow=\"HOSPITAL_DISCHARGE\"} 1\n"));
  v1::TrackResponse t = Tracked(*trust_, id);
  EXPECT_EQ(t.status(), v1::MESSAGE_STATUS_EXPIRED);
  EXPECT_TRUE(t.has_expired_at());

  Receiver sender_rx(*trust_, 10);
  auto d = sender_rx.Next();
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->kind(), v1::MESSAGE_KIND_NON_DELIVERY_REPORT);
  EXPECT_EQ(d->workflow(), "NON_DELIVERY_REPORT");
  EXPECT_EQ(d->local_reference(), "LOCAL-7");
  v1::NonDeliveryReport ndr;
  ASSERT_TRUE(ndr.ParseFromString(d->payload()));
  EXPECT_EQ(ndr.message_id(), id);
  EXPECT_EQ(ndr.recipient(), "503");
  sender_rx.Ack(d->message_id());
  sender_rx.Close();

  Receiver council_rx(*council_, 10);
  EXPECT_FALSE(council_rx.Next(absl::Milliseconds(300)).has_value()) << "an expired message was delivered";
  council_rx.Close();
}

TEST_F(ExchangeTest, AnExpiredMessageIsResentWhileItsBodyIsKeptUntilRetention) {
  v1::SendRequest r = Req("503", "exp-2", "{\"event\":\"discharge\"}");
  r.set_local_reference("LOCAL-8");
  const std::string id = SendOk(*trust_, r);
  const std::string late = SendOk(*trust_, Req("503", "exp-3"));
  clock_.Advance(absl::Hours(24 * 5) + absl::Seconds(1));
  ASSERT_EQ(broker_->SweepNow()->expired, 2);
  v1::TrackResponse t = Tracked(*trust_, id);
  EXPECT_EQ(t.status(), v1::MESSAGE_STATUS_EXPIRED);
  EXPECT_FALSE(t.body_purged()) << "kept for delivery.retention";

  auto act = [&](const std::string& which, v1::MessageActionResponse* out) {
    return OperatorAct(*broker_, v1::MESSAGE_ACTION_RESEND, which, "", "council system was down (INC0200)", out);
  };
  v1::MessageActionResponse resp;
  grpc::Status s = act(id, &resp);
  ASSERT_TRUE(s.ok()) << DescribeStatus(s);
  const std::string resent = resp.receipt().message_id();
  EXPECT_EQ(resp.status(), v1::MESSAGE_STATUS_ACCEPTED);
  EXPECT_EQ(resp.receipt().flow(), "synthetic-opaque");
  Receiver rx(*council_, 10);
  auto d = rx.Next();
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->message_id(), resent);
  EXPECT_EQ(d->payload(), "{\"event\":\"discharge\"}");
  EXPECT_EQ(d->local_reference(), "LOCAL-8");
  EXPECT_EQ(d->sender(), "RR8");
  rx.Ack(resent);
  rx.Close();
  t = Tracked(*trust_, id);
  EXPECT_EQ(t.status(), v1::MESSAGE_STATUS_EXPIRED);
  EXPECT_EQ(t.replaced_by(), resent);
  EXPECT_TRUE(t.body_purged());
  EXPECT_EQ(Tracked(*trust_, resent).replaces(), id);
  EXPECT_EQ(ErrorReason(act(id, &resp)), "MESSAGE_NOT_RESENDABLE") << "once";

  // Past retention (30 days by default) the body is gone: nothing to resend.
  clock_.Advance(absl::Hours(24 * 30));
  ASSERT_TRUE(broker_->SweepNow().ok());
  EXPECT_TRUE(Tracked(*trust_, late).body_purged());
  s = act(late, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ErrorReason(s), "MESSAGE_NOT_RESENDABLE");
}

v1::ReceiveRequest RejectOf(const std::string& id, const std::string& code, const std::string& text) {
  v1::ReceiveRequest r;
  r.mutable_reject()->set_message_id(id);
  r.mutable_reject()->set_code(code);
  r.mutable_reject()->set_text(text);
  return r;
}

TEST_F(ExchangeTest, ARejectOnTheStreamHoldsTheMessageFreesItsPlaceAndTellsTheSender) {
  v1::SendRequest first = Req("503", "rej-1");
  first.set_local_reference("LOCAL-9");
  const std::string refused = SendOk(*trust_, first);
  const std::string next = SendOk(*trust_, Req("503", "rej-2"));
  {
    Receiver rx(*council_, /*max_in_flight=*/1);
    auto d = rx.Next();
    ASSERT_TRUE(d.has_value());
    ASSERT_EQ(d->message_id(), refused);
    ASSERT_TRUE(rx.Send(RejectOf(refused, "UNKNOWN_PATIENT", "no such person on our system")));
    auto d2 = rx.Next();
    ASSERT_TRUE(d2.has_value()) << "the reject freed the stream's only place";
    EXPECT_EQ(d2->message_id(), next);
    ASSERT_TRUE(rx.Ack(next));
    const grpc::Status end = rx.Close();  // clean: the reject is durable
    EXPECT_TRUE(end.ok()) << DescribeStatus(end);
  }
  const v1::TrackResponse t = Tracked(*trust_, refused);
  EXPECT_EQ(t.status(), v1::MESSAGE_STATUS_HELD);
  EXPECT_EQ(t.held_reason(), "REJECTED_BY_RECIPIENT");
  EXPECT_EQ(t.rejection_code(), "UNKNOWN_PATIENT");
  EXPECT_EQ(t.rejection_text(), "no such person on our system");
  EXPECT_TRUE(t.has_held_at());
  EXPECT_FALSE(t.body_purged());

  // Never delivered again.
  clock_.Advance(absl::Minutes(5));
  {
    Receiver rx(*council_, 10);
    broker_->WakeAll();
    EXPECT_FALSE(rx.Next(absl::Milliseconds(300)).has_value());
    rx.Close();
  }
  // Its sender has a non-delivery report saying why.
  Receiver sender_rx(*trust_, 10);
  auto ndr_delivery = sender_rx.Next();
  ASSERT_TRUE(ndr_delivery.has_value());
  EXPECT_EQ(ndr_delivery->kind(), v1::MESSAGE_KIND_NON_DELIVERY_REPORT);
  EXPECT_EQ(ndr_delivery->local_reference(), "LOCAL-9");
  v1::NonDeliveryReport ndr;
  ASSERT_TRUE(ndr.ParseFromString(ndr_delivery->payload()));
  EXPECT_EQ(ndr.message_id(), refused);
  EXPECT_EQ(ndr.reason(), "REJECTED_BY_RECIPIENT");
  EXPECT_EQ(ndr.rejection_code(), "UNKNOWN_PATIENT");
  sender_rx.Ack(ndr_delivery->message_id());
  sender_rx.Close();

  // Audited, the recipient as the actor, with its code (not its text).
  AuditRun q = AuditCli(*broker_, "ig-officer", {"--format", "json", "query", "--event", "held"});
  ASSERT_EQ(q.rc, 0) << q.err;
  EXPECT_THAT(q.out, ::testing::HasSubstr(refused));
  EXPECT_THAT(q.out, ::testing::HasSubstr("REJECTED_BY_RECIPIENT"));
  EXPECT_THAT(q.out, ::testing::HasSubstr("UNKNOWN_PATIENT"));
  EXPECT_THAT(q.out, ::testing::HasSubstr("\"actor\": \"503\""));
  EXPECT_EQ(q.out.find("no such person"), std::string::npos);
}

TEST_F(ExchangeTest, UnaryRejectAnswersTheStatusAndBadRejectsAreRefused) {
  const std::string id = SendOk(*trust_, Req("503", "u-1"));
  const std::string acked = SendOk(*trust_, Req("503", "u-2"));
  v1::AckRequest ack;
  ack.add_message_ids(acked);
  v1::AckResponse ack_resp;
  ASSERT_TRUE(Call(&v1::Exchange::Stub::Ack, *council_, ack, &ack_resp).ok());
  auto reject = [](v1::Exchange::Stub& stub, const std::string& which, const std::string& code, v1::RejectResponse* r) {
    v1::RejectRequest req;
    req.set_message_id(which);
    req.set_code(code);
    req.set_text("refused by the test");
    return Call(&v1::Exchange::Stub::Reject, stub, req, r);
  };
  v1::RejectResponse r;
  ASSERT_TRUE(reject(*council_, id, "HTTP_400", &r).ok());
  EXPECT_EQ(r.status(), v1::MESSAGE_STATUS_HELD);
  ASSERT_TRUE(reject(*council_, id, "HTTP_400", &r).ok());
  EXPECT_EQ(r.status(), v1::MESSAGE_STATUS_HELD) << "rejecting twice is not an error";
  ASSERT_TRUE(reject(*council_, acked, "HTTP_400", &r).ok());
  EXPECT_EQ(r.status(), v1::MESSAGE_STATUS_ACKNOWLEDGED) << "unchanged";
  grpc::Status s = reject(*trust_, id, "HTTP_400", &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << "only its recipient may reject it";
  s = reject(*council_, id, "not a code", &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ErrorReason(s), "REJECTION_INVALID");
  s = reject(*council_, "not-an-id", "AE", &r);
  EXPECT_EQ(ErrorReason(s), "MESSAGE_ID_INVALID");

  // On a stream, a bad reject ends it.
  grpc::ClientContext ctx;
  auto stream = council_->Receive(&ctx);
  v1::ReceiveRequest open;
  open.mutable_open()->set_max_in_flight(1);
  ASSERT_TRUE(stream->Write(open));
  stream->Write(RejectOf(id, "", "no code"));
  v1::DeliveryBatch b;
  while (stream->Read(&b)) {
  }
  s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ErrorReason(s), "REJECTION_INVALID");
}

TEST_F(ExchangeTest, AMessageNeverAcknowledgedIsHeldAfterMaxAttemptsAndStopsBlocking) {
  Restart("delivery: {max_attempts: 2}\n");
  const std::string stuck = SendOk(*trust_, Req("503", "m-1"));
  // A consumer that crashes on it: each stream ends without an ack, and the
  // message goes back to the mailbox at once.
  for (uint32_t attempt = 1; attempt <= 2; ++attempt) {
    Receiver rx(*council_, /*max_in_flight=*/1);
    auto d = rx.Next();
    ASSERT_TRUE(d.has_value()) << attempt;
    EXPECT_EQ(d->message_id(), stuck);
    EXPECT_EQ(d->delivery_count(), attempt);
  }
  const std::string next = SendOk(*trust_, Req("503", "m-2"));
  Receiver rx(*council_, /*max_in_flight=*/1);
  auto d = rx.Next();
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->message_id(), next) << "the stuck one was held at its third attempt";
  ASSERT_TRUE(rx.Ack(next));
  rx.Close();
  const v1::TrackResponse t = Tracked(*trust_, stuck);
  EXPECT_EQ(t.status(), v1::MESSAGE_STATUS_HELD);
  EXPECT_EQ(t.held_reason(), "MAX_ATTEMPTS_REACHED");
  EXPECT_EQ(t.delivery_count(), 2u);
}

TEST_F(ExchangeTest, AnIdempotencyKeyIsHeldForItsWindowThenMakesANewMessage) {
  Restart("delivery: {idempotency_window: 1h}\n");
  const std::string first = SendOk(*trust_, Req("503", "daily-return", "{\"day\":1}"));
  clock_.Advance(absl::Minutes(59));
  v1::SendReceipt again;
  ASSERT_TRUE(SendStatus(*trust_, Req("503", "daily-return", "{\"day\":1}"), &again).ok());
  EXPECT_TRUE(again.duplicate());
  EXPECT_EQ(again.message_id(), first);
  clock_.Advance(absl::Minutes(2));
  v1::SendReceipt fresh;
  ASSERT_TRUE(SendStatus(*trust_, Req("503", "daily-return", "{\"day\":2}"), &fresh).ok());
  EXPECT_FALSE(fresh.duplicate()) << "the key's hour has passed";
  EXPECT_NE(fresh.message_id(), first);
  v1::TrackRequest by_key;
  by_key.set_idempotency_key("daily-return");
  v1::TrackResponse t;
  ASSERT_TRUE(Call(&v1::Exchange::Stub::Track, *trust_, by_key, &t).ok());
  EXPECT_EQ(t.message_id(), fresh.message_id());
}

TEST_F(ExchangeTest, TwoSystemsShareAMailboxByWorkflow) {
  v1::SendRequest referral = Req("503", "wf-1");
  referral.set_workflow("REFERRAL");
  const std::string waiting_referral = SendOk(*trust_, referral);
  const std::string waiting_discharge = SendOk(*trust_, Req("503", "wf-2"));
  auto open = [](const std::vector<std::string>& workflows) {
    v1::ReceiveRequest r;
    r.mutable_open()->set_max_in_flight(10);
    for (const auto& w : workflows) r.mutable_open()->add_workflows(w);
    return r;
  };
  Receiver social_care(*council_, open({"REFERRAL"}));
  Receiver hospital_team(*council_, open({"HOSPITAL_DISCHARGE", "CARE_PACKAGE_STARTED"}));
  auto a = social_care.Next();
  auto b = hospital_team.Next();
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_EQ(a->message_id(), waiting_referral) << "from the backlog";
  EXPECT_EQ(b->message_id(), waiting_discharge);
  // New sends go straight to the stream that takes their workflow.
  referral.set_idempotency_key("wf-3");
  const std::string new_referral = SendOk(*trust_, referral);
  const std::string new_discharge = SendOk(*trust_, Req("503", "wf-4"));
  auto c = social_care.Next();
  auto d = hospital_team.Next();
  ASSERT_TRUE(c.has_value() && d.has_value());
  EXPECT_EQ(c->message_id(), new_referral);
  EXPECT_EQ(d->message_id(), new_discharge);
  EXPECT_FALSE(social_care.Next(absl::Milliseconds(300)).has_value()) << "never another workflow";
  for (const auto& id : {waiting_referral, new_referral}) EXPECT_TRUE(social_care.Ack(id));
  for (const auto& id : {waiting_discharge, new_discharge}) EXPECT_TRUE(hospital_team.Ack(id));
  EXPECT_TRUE(social_care.Close().ok());
  EXPECT_TRUE(hospital_team.Close().ok());

  Receiver bad(*council_, open({"not a workflow"}));
  const grpc::Status s = bad.Close();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ErrorReason(s), "WORKFLOW_INVALID");
}

TEST_F(ExchangeTest, ReceiveProtocolErrors) {
  grpc::ClientContext ctx;
  auto stream = council_->Receive(&ctx);
  v1::ReceiveRequest ack;
  ack.set_ack("0123456789abcdef0123456789abcdef");
  stream->Write(ack);  // before open
  v1::DeliveryBatch d;
  EXPECT_FALSE(stream->Read(&d));
  grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ErrorReason(s), "RECEIVE_OPEN_REQUIRED");
}

TEST_F(ExchangeTest, StreamLimitIsEnforced) {
  Restart("limits: {max_streams: 1}\n");
  Receiver first(*council_, 1);
  SendOk(*trust_, Req("503"));
  auto d = first.Next();  // a delivery proves the first stream holds the only slot
  ASSERT_TRUE(d.has_value());
  first.Ack(d->message_id());
  Receiver second(*council_, 1);
  grpc::Status s = second.Close();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ErrorReason(s), "TOO_MANY_STREAMS");
  EXPECT_TRUE(first.Close().ok());
}

TEST_F(ExchangeTest, HealthAndReflectionAreServed) {
  auto channel = ChannelAs(*broker_, "operator");
  EXPECT_EQ(HealthStatus(channel), 1);  // SERVING
  grpc::CompletionQueue cq;
  grpc::TemplatedGenericStub<cbtest::ReflectionRequest, cbtest::ReflectionResponse> reflection(channel);
  {
    grpc::ClientContext ctx;
    auto call = reflection.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
    void* tag;
    bool ok;
    call->StartCall(reinterpret_cast<void*>(2));
    ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
    cbtest::ReflectionRequest req;
    req.set_list_services("*");
    call->Write(req, reinterpret_cast<void*>(3));
    ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
    cbtest::ReflectionResponse resp;
    call->Read(&resp, reinterpret_cast<void*>(4));
    ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
    std::vector<std::string> names;
    for (const auto& s : resp.list_services_response().service()) names.push_back(s.name());
    EXPECT_NE(std::find(names.begin(), names.end(), "carebroker.v1.Exchange"), names.end());
    EXPECT_NE(std::find(names.begin(), names.end(), "grpc.health.v1.Health"), names.end());
    ctx.TryCancel();
    grpc::Status st;
    call->Finish(&st, reinterpret_cast<void*>(5));
    cq.Next(&tag, &ok);
  }
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
}

// Connections that never finish their TLS handshake are closed after
// limits.handshake_timeout, and one with no call open after
// limits.idle_timeout, so a client cannot hold descriptors by connecting
// and saying nothing.
TEST_F(ExchangeTest, SilentAndIdleConnectionsAreClosed) {
  Restart("limits: {handshake_timeout: 1s, idle_timeout: 2s}\n");
  constexpr int kSilent = 200;
  std::vector<int> fds;
  for (int i = 0; i < kSilent; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(broker_->port()));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
    fds.push_back(fd);
  }
  const absl::Time opened = absl::Now();
  // Each is closed by the broker: a read returns end of file or a reset.
  int closed = 0;
  for (int fd : fds) {
    pollfd p{fd, POLLIN, 0};
    const int left = static_cast<int>(absl::ToInt64Milliseconds(opened + absl::Seconds(10) - absl::Now()));
    if (::poll(&p, 1, std::max(left, 0)) == 1) {
      char c;
      if (::recv(fd, &c, 1, 0) <= 0) ++closed;
    }
    ::close(fd);
  }
  const absl::Duration took = absl::Now() - opened;
  EXPECT_EQ(closed, kSilent);
  EXPECT_GE(took, absl::Milliseconds(900)) << "closed before the handshake timeout";
  std::cout << kSilent << " silent connections closed in " << absl::ToInt64Milliseconds(took) << " ms\n";

  // A connection that made a call and then holds none is sent away.
  auto channel = ChannelAs(*broker_, "RR8");
  auto stub = v1::Exchange::NewStub(channel);
  v1::TrackRequest track;
  track.set_message_id("01J00000000000000000000000");
  v1::TrackResponse resp;
  (void)Call(&v1::Exchange::Stub::Track, *stub, track, &resp);
  ASSERT_EQ(channel->GetState(false), GRPC_CHANNEL_READY);
  bool idle = false;
  for (int i = 0; i < 100 && !idle; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    idle = channel->GetState(false) != GRPC_CHANNEL_READY;
  }
  EXPECT_TRUE(idle) << "an idle connection was kept past limits.idle_timeout";
  // The client reconnects on its next call.
  SendOk(*stub, Req("503", "after-idle"));
}

}  // namespace
}  // namespace carebroker::testing
