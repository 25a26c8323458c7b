// SendLarge and Download through the real server: real gRPC with mutual TLS
// on loopback, a real SQLite file. A payload over the unary limit goes in
// chunks, is invisible until its last chunk, and comes back piece by piece.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "core/sha256.h"
#include "broker/client/client.h"
#include "tests/integration/harness.h"

namespace carebroker::testing {
namespace {

constexpr size_t kMiB = 1 << 20;

// A synthetic file: not constant, so a chunk out of place would show.
std::string FileBytes(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + (i * 131 + i / 4099) % 251);
  return s;
}

v1::LargeSendRequest Start(v1::SendRequest req, uint32_t chunks) {
  v1::LargeSendRequest r;
  *r.mutable_start()->mutable_request() = std::move(req);
  r.mutable_start()->set_chunks(chunks);
  return r;
}

v1::LargeSendRequest Chunk(std::string data) {
  v1::LargeSendRequest r;
  r.set_chunk(std::move(data));
  return r;
}

v1::SendRequest Pdf(const std::string& to, std::string first, const std::string& key = "") {
  v1::SendRequest r = Req(to, key, std::move(first));
  r.set_content_type("application/pdf");
  return r;
}

// One SendLarge call writing `requests` in order, then half-closing.
grpc::Status SendLarge(v1::Exchange::Stub& stub, const std::vector<v1::LargeSendRequest>& requests,
                       v1::SendReceipt* receipt) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto w = stub.SendLarge(&ctx, receipt);
  for (const auto& r : requests) {
    if (!w->Write(r)) break;  // the server ended the call
  }
  w->WritesDone();
  return w->Finish();
}

struct Downloaded {
  grpc::Status status;
  std::optional<v1::Delivery> delivery;
  std::string payload;
  size_t writes = 0;
  size_t largest = 0;
};

Downloaded Download(v1::Exchange::Stub& stub, const std::string& id) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::DownloadRequest req;
  req.set_message_id(id);
  auto r = stub.Download(&ctx, req);
  Downloaded out;
  v1::DownloadResponse resp;
  while (r->Read(&resp)) {
    if (resp.has_delivery()) {
      EXPECT_FALSE(out.delivery.has_value()) << "one delivery, first";
      out.delivery = resp.delivery();
    } else {
      EXPECT_TRUE(out.delivery.has_value()) << "the metadata comes before the data";
      out.payload += resp.data();
      ++out.writes;
      out.largest = std::max(out.largest, resp.data().size());
    }
  }
  out.status = r->Finish();
  return out;
}

class LargeMessageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    broker_ = StartBroker(ConfigYaml(TempDir("large")), &clock_);
    ASSERT_NE(broker_, nullptr);
    trust_ = StubAs(*broker_, "RR8");
    council_ = StubAs(*broker_, "503");
  }

  v1::MessageStatus StatusOf(v1::Exchange::Stub& stub, const std::string& id) {
    v1::TrackRequest req;
    req.set_message_id(id);
    v1::TrackResponse t;
    grpc::Status s = Call(&v1::Exchange::Stub::Track, stub, req, &t);
    return s.ok() ? t.status() : v1::MESSAGE_STATUS_UNSPECIFIED;
  }

  FakeClock clock_;
  std::unique_ptr<Broker> broker_;
  std::unique_ptr<v1::Exchange::Stub> trust_, council_;
};

TEST_F(LargeMessageTest, ChunksOverTheUnaryLimitArriveWholeOnlyAfterTheLast) {
  // Three chunks of 6 MiB: 18 MiB, over the 8 MiB a Send takes.
  const std::string file = FileBytes(18 * kMiB, 'a');
  const std::string c1 = file.substr(0, 6 * kMiB), c2 = file.substr(6 * kMiB, 6 * kMiB), c3 = file.substr(12 * kMiB);
  {
    v1::SendReceipt big;
    grpc::Status s = Call(&v1::Exchange::Stub::Send, *trust_, Pdf("503", file), &big);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << "a unary send over the limit is refused";
  }

  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::SendReceipt receipt;
  auto w = trust_->SendLarge(&ctx, &receipt);
  ASSERT_TRUE(w->Write(Start(Pdf("503", c1, "large-1"), 3)));
  ASSERT_TRUE(w->Write(Chunk(c2)));
  // Not yet visible: a Receive stream gets nothing.
  Receiver rx(*council_, 10, /*large_messages=*/true);
  Receiver whole_only(*council_, 10);
  EXPECT_FALSE(rx.Next(absl::Milliseconds(300)).has_value());
  ASSERT_TRUE(w->Write(Chunk(c3)));
  w->WritesDone();
  grpc::Status s = w->Finish();
  ASSERT_TRUE(s.ok()) << DescribeStatus(s);
  ASSERT_EQ(receipt.message_id().size(), 32u);
  EXPECT_EQ(receipt.recipient(), "503");
  EXPECT_EQ(receipt.flow(), "synthetic-opaque");
  EXPECT_FALSE(receipt.duplicate());

  // A stream taking large messages now tells of it, without its payload;
  // one that did not ask never sees it...
  EXPECT_FALSE(whole_only.Next(absl::Milliseconds(300)).has_value());
  auto d = rx.Next();
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->message_id(), receipt.message_id());
  EXPECT_EQ(d->chunks(), 3u);
  EXPECT_EQ(d->payload(), "");
  EXPECT_EQ(d->content_type(), "application/pdf");
  // ... which Download brings, in writes under gRPC's default 4 MiB limit.
  Downloaded got = Download(*council_, receipt.message_id());
  ASSERT_TRUE(got.status.ok()) << DescribeStatus(got.status);
  ASSERT_TRUE(got.delivery.has_value());
  EXPECT_EQ(got.delivery->sender(), "RR8");
  EXPECT_EQ(got.delivery->chunks(), 3u);
  EXPECT_EQ(got.delivery->payload(), "");
  EXPECT_EQ(got.payload.size(), file.size());
  EXPECT_TRUE(got.payload == file) << "the bytes come back whole and in order";
  EXPECT_LE(got.largest, kMiB);
  EXPECT_GE(got.writes, 18u);
  EXPECT_EQ(StatusOf(*trust_, receipt.message_id()), v1::MESSAGE_STATUS_DELIVERED);

  // Acked as any other; then gone.
  ASSERT_TRUE(rx.Ack(receipt.message_id()));
  EXPECT_TRUE(rx.Close().ok());
  EXPECT_EQ(StatusOf(*trust_, receipt.message_id()), v1::MESSAGE_STATUS_ACKNOWLEDGED);
  Downloaded again = Download(*council_, receipt.message_id());
  EXPECT_EQ(again.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ErrorReason(again.status), "MESSAGE_NOT_FOUND");
  EXPECT_THAT(again.status.error_message(), ::testing::HasSubstr("acknowledged"));

  // A retry with the same key answers with the first message at once.
  v1::SendReceipt repeat;
  ASSERT_TRUE(SendLarge(*trust_, {Start(Pdf("503", c1, "large-1"), 3)}, &repeat).ok());
  EXPECT_TRUE(repeat.duplicate());
  EXPECT_EQ(repeat.message_id(), receipt.message_id());
}

TEST_F(LargeMessageTest, DownloadServesAMessageSentWholeToItsRecipientOnly) {
  const std::string id = SendOk(*trust_, Pdf("503", FileBytes(3 * kMiB + 7, 'q')));
  Downloaded other = Download(*trust_, id);
  EXPECT_EQ(other.status.error_code(), grpc::StatusCode::NOT_FOUND) << "the sender's is not a recipient's";
  EXPECT_FALSE(other.delivery.has_value());
  Downloaded got = Download(*council_, id);
  ASSERT_TRUE(got.status.ok()) << DescribeStatus(got.status);
  EXPECT_EQ(got.delivery->chunks(), 1u);
  EXPECT_EQ(got.delivery->delivery_count(), 1u);
  EXPECT_EQ(got.payload, FileBytes(3 * kMiB + 7, 'q'));
  EXPECT_EQ(got.writes, 4u);
  Downloaded bad = Download(*council_, "not-an-id");
  EXPECT_EQ(bad.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ErrorReason(bad.status), "MESSAGE_ID_INVALID");
}

TEST_F(LargeMessageTest, BadLargeSendsAreRefusedWithTheirReason) {
  v1::SendReceipt r;
  auto refused = [&](const std::vector<v1::LargeSendRequest>& reqs) {
    r.Clear();
    return SendLarge(*trust_, reqs, &r);
  };
  grpc::Status s = refused({Chunk("no start")});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ErrorReason(s), "CHUNK_RANGE_INVALID");
  s = refused({});
  EXPECT_EQ(ErrorReason(s), "CHUNK_RANGE_INVALID") << "a stream with no start";
  s = refused({Start(Pdf("503", "x"), 0)});
  EXPECT_EQ(ErrorReason(s), "CHUNK_RANGE_INVALID");
  s = refused({Start(Pdf("503", "x"), 10001)});
  EXPECT_EQ(ErrorReason(s), "CHUNK_RANGE_INVALID");
  // A care record is decided whole: never in chunks.
  v1::SendRequest record = CareSend("503", "HOSPITAL_DISCHARGE", "direct-care");
  s = refused({Start(record, 2), Chunk("more")});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ErrorReason(s), "CHUNK_RANGE_INVALID");
  // Decided on its start like any send: no agreement, no message.
  v1::SendRequest undecided = Pdf("503", "x");
  undecided.set_workflow("NO_SUCH_FLOW");
  s = refused({Start(undecided, 2), Chunk("more")});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(r.message_id(), "");
  // A start again, or an empty chunk, after the start.
  s = refused({Start(Pdf("503", "x"), 3), Start(Pdf("503", "y"), 3)});
  EXPECT_EQ(ErrorReason(s), "CHUNK_RANGE_INVALID");
  s = refused({Start(Pdf("503", "x"), 3), Chunk("")});
  EXPECT_EQ(ErrorReason(s), "PAYLOAD_EMPTY");
}

TEST_F(LargeMessageTest, AStreamEndingEarlyLeavesTheMessageUploadingAndUnseen) {
  v1::SendReceipt r;
  grpc::Status s = SendLarge(*trust_, {Start(Pdf("503", "part one"), 3), Chunk("part two")}, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ErrorReason(s), "CHUNKS_INCOMPLETE");
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("after 2 of 3 chunks"));
  const std::string message = s.error_message();
  const size_t at = message.find("message ");
  ASSERT_NE(at, std::string::npos);
  const std::string id = message.substr(at + 8, 32);
  EXPECT_EQ(StatusOf(*trust_, id), v1::MESSAGE_STATUS_UPLOADING);
  Receiver rx(*council_, 10, /*large_messages=*/true);
  EXPECT_FALSE(rx.Next(absl::Milliseconds(300)).has_value());
  Downloaded got = Download(*council_, id);
  EXPECT_EQ(got.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(got.status.error_message(), ::testing::HasSubstr("uploading"));
}

}  // namespace
}  // namespace carebroker::testing
