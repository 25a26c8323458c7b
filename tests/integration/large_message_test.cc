// SendLarge and Download through the real server: real gRPC with mutual TLS
// on loopback, a real SQLite file. A payload over the unary limit goes in
// chunks, is invisible until its last chunk, and comes back piece by piece.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "adapters/cld/cld.h"
#include "adapters/common/csv.h"
#include "core/files.h"
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

TEST_F(LargeMessageTest, ADownloadRenewsTheClaimSoTheMessageIsNotHandedOutAgainMidway) {
  v1::SendReceipt r;
  ASSERT_TRUE(SendLarge(*trust_, {Start(Pdf("503", "one"), 3), Chunk("two"), Chunk("three")}, &r).ok());
  Receiver rx(*council_, 10, /*large_messages=*/true);
  ASSERT_TRUE(rx.Next().has_value());  // claimed now, for the 30 s visibility timeout
  clock_.Advance(absl::Seconds(25));
  Downloaded got = Download(*council_, r.message_id());
  ASSERT_TRUE(got.status.ok()) << DescribeStatus(got.status);
  EXPECT_EQ(got.payload, "onetwothree");
  clock_.Advance(absl::Seconds(15));  // 40 s after the claim, 15 s after the download began
  broker_->WakeAll();
  EXPECT_FALSE(rx.Next(absl::Milliseconds(300)).has_value()) << "the download renewed the claim";
  clock_.Advance(absl::Seconds(16));  // the renewed claim (30 s from the download) has passed
  broker_->WakeAll();
  auto again = rx.Next();
  ASSERT_TRUE(again.has_value()) << "unacknowledged, it comes back once the renewed claim ends";
  EXPECT_EQ(again->message_id(), r.message_id());
  EXPECT_EQ(again->delivery_count(), 2u) << "the claim (the download under it was part of it) and this";
  EXPECT_TRUE(rx.Ack(r.message_id()));
  EXPECT_TRUE(rx.Close().ok());
}

TEST_F(LargeMessageTest, ARejectedFileInChunksIsRedirectedWholeItsChunksCopiedByTheStore) {
  // Three chunks, two of them over the store's 4 MiB pieces.
  const std::string c1 = FileBytes(5 * kMiB, 'p'), c2 = FileBytes(5 * kMiB, 'q'), c3 = FileBytes(1000, 'r');
  v1::SendReceipt r;
  ASSERT_TRUE(SendLarge(*trust_, {Start(Pdf("503", c1), 3), Chunk(c2), Chunk(c3)}, &r).ok());
  ASSERT_TRUE(RejectAs(*council_, r.message_id(), "NOT_OUR_AREA").ok());
  v1::MessageActionResponse resp;
  grpc::Status s =
      OperatorAct(*broker_, v1::MESSAGE_ACTION_REDIRECT, r.message_id(), "511", "the person moved (INC0300)", &resp);
  ASSERT_TRUE(s.ok()) << DescribeStatus(s);
  const std::string moved = resp.receipt().message_id();

  auto other = StubAs(*broker_, "511");
  Receiver rx(*other, 10, /*large_messages=*/true);
  auto d = rx.Next();
  ASSERT_TRUE(d.has_value()) << "complete and claimable at once";
  EXPECT_EQ(d->message_id(), moved);
  EXPECT_EQ(d->chunks(), 3u);
  Downloaded got = Download(*other, moved);
  ASSERT_TRUE(got.status.ok()) << DescribeStatus(got.status);
  EXPECT_TRUE(got.payload == c1 + c2 + c3) << "every chunk, in order";
  ASSERT_TRUE(rx.Ack(moved));
  rx.Close();
  v1::TrackRequest tr;
  tr.set_message_id(r.message_id());
  v1::TrackResponse t;
  ASSERT_TRUE(Call(&v1::Exchange::Stub::Track, *trust_, tr, &t).ok());
  EXPECT_EQ(t.replaced_by(), moved);
  EXPECT_TRUE(t.body_purged()) << "the original's chunks are gone";

  // Its accepted entry has the digest of the whole file, as the first send's had.
  AuditRun q = AuditCli(*broker_, "ig-officer", {"--format", "json", "query", "--event", "send-accepted"});
  ASSERT_EQ(q.rc, 0) << q.err;
  const auto entries = nlohmann::json::parse(q.out);
  std::map<std::string, std::string> digest;
  for (const auto& e : entries) digest[e.at("message")] = e.at("digest");
  ASSERT_EQ(digest.count(moved), 1u) << q.out;
  EXPECT_EQ(digest[moved], digest[r.message_id()]);
  EXPECT_FALSE(digest[moved].empty());
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


// A chunk is at most 32 MiB (kMaxLargeChunkBytes) even where
// limits.max_message_bytes lets one Send carry 64 MiB: larger, protobuf's
// parse would hold it twice over.
TEST(LargeChunkLimitTest, AChunkOver32MiBIsRefusedAnd32MiBIsTaken) {
  FakeClock clock;
  auto broker = StartBroker(
      ConfigYaml(TempDir("large-chunk"), "limits: {max_message_bytes: 67108864, memory_budget_bytes: 268435456}\n"),
      &clock);
  ASSERT_NE(broker, nullptr);
  auto trust = StubAs(*broker, "RR8");
  auto council = StubAs(*broker, "503");
  const std::string most = FileBytes(32 * kMiB, 'a');
  v1::SendReceipt r;
  ASSERT_TRUE(SendLarge(*trust, {Start(Pdf("503", "first"), 2), Chunk(most)}, &r).ok());
  Downloaded got = Download(*council, r.message_id());
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.payload.size(), 32 * kMiB + 5);
  EXPECT_TRUE(got.payload.substr(5) == most) << "the 32 MiB chunk came back as sent";

  const std::string over = most + "x";
  r.Clear();
  grpc::Status s = SendLarge(*trust, {Start(Pdf("503", "first"), 2), Chunk(over)}, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ErrorReason(s), "MESSAGE_TOO_LARGE");
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("chunk is at most 33554432 bytes"));
  s = SendLarge(*trust, {Start(Pdf("503", over), 2), Chunk("more")}, &r);
  EXPECT_EQ(ErrorReason(s), "MESSAGE_TOO_LARGE") << "start's payload is a chunk too";
  EXPECT_EQ(r.message_id(), "");
  Receiver rx(*council, 10, /*large_messages=*/true);
  auto first = rx.Next(absl::Seconds(5));
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->message_id(), got.delivery->message_id());
  EXPECT_FALSE(rx.Next(absl::Milliseconds(300)).has_value()) << "nothing of the refused sends arrives";
}


// A CLD return in chunks, through SendLarge to NHS England, which takes
// CLD: each row decided and minimised as the chunks arrive.
class CldSubmissionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = TempDir("cld-submission");
    std::ofstream(dir + "/x26.key") << std::string(32, 'n');
    std::filesystem::permissions(dir + "/x26.key",
                                 std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    broker_ = StartBroker(
        ConfigYaml(dir + "/data",
                   absl::StrCat("policy:\n  agreements_dir: ", SourcePath("deploy/agreements"),
                                "\n  pseudonym_keys: [{organisation: X26, file: ", dir, "/x26.key}]\n"),
                   R"(
organisations:
  - {ods: "503", name: Lincolnshire County Council, kind: local_authority}
  - {ods: Y06601, name: Example GP practice, kind: gp_practice}
  - {ods: X26, name: NHS England, kind: nhs_england, receives: cld}
)"),
        &SystemClock::Get());
    ASSERT_NE(broker_, nullptr);
    council_ = StubAs(*broker_, "503");
    nhse_ = StubAs(*broker_, "X26");
  }

  // `rows` rows, one person each; person i's name and NHS number are
  // distinctive, so a leak would show.
  static std::string Return(int rows) {
    std::string csv =
        "LA Code,Reporting Period Start Date,Reporting Period End Date,NHS Number,First Name,Last Name,"
        "Date of Birth,Postcode,Event Type,Event Reference,Event Start Date,Assessment Type,"
        "Eligible Needs Identified\n";
    for (int i = 0; i < rows; ++i) {
      absl::StrAppend(&csv, "503,2026-07-01,2026-09-30,", SyntheticNhsNumber(i), ",Given", i, ",\"Family, ", i,
                      "\",1950-02-0", 1 + i % 9, ",LN", 1 + i % 3, " 1AB,Assessment,ASM-", i,
                      ",2026-07-10,Long Term Assessment,Yes\n");
    }
    return csv;
  }

  std::unique_ptr<Broker> broker_;
  std::unique_ptr<v1::Exchange::Stub> council_, nhse_;
};

TEST_F(CldSubmissionTest, RowsArrivingInChunksAreMinimisedAndAnOptedOutPersonsRowIsSentAsTheLawRequires) {
  // Person 17 has opted out; the return is required by law (exempt), so
  // their row goes, minimised as every other (a flow where the opt-out
  // applies withholds it: submission_test).
  SetNationalOptOut(*broker_, SyntheticNhsNumber(17), true);

  const int kRows = 20000;  // about 2.4 MB, in three chunks cut mid-row
  const std::string file = Return(kRows);
  const size_t a = file.size() / 3 + 17, b = 2 * file.size() / 3 + 5;
  v1::SendRequest start = Req("X26", "", file.substr(0, a));
  start.set_workflow("CLD_RETURN");
  start.set_purpose("planning");
  start.set_content_type("text/csv; profile=asc-cld-release-1");
  v1::SendReceipt receipt;
  grpc::Status s = SendLarge(*council_, {Start(start, 3), Chunk(file.substr(a, b - a)), Chunk(file.substr(b))},
                             &receipt);
  ASSERT_TRUE(s.ok()) << DescribeStatus(s);
  EXPECT_EQ(receipt.agreement_id(), "DSA-ASC-CLD");
  EXPECT_THAT(receipt.withheld_fields(), ::testing::Contains("person.names"));

  Receiver rx(*nhse_, 10, /*large_messages=*/true);
  auto d = rx.Next();
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->message_id(), receipt.message_id());
  EXPECT_EQ(d->chunks(), 3u);
  EXPECT_EQ(d->content_type(), "text/csv; profile=asc-cld-release-1");
  Downloaded got = Download(*nhse_, receipt.message_id());
  ASSERT_TRUE(got.status.ok()) << DescribeStatus(got.status);
  auto rows = adapters::ParseCsv(got.payload);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), static_cast<size_t>(kRows) + 1) << "the header and every row";
  std::set<std::string> references;
  const size_t reference = std::find(cld::Columns().begin(), cld::Columns().end(), "Event Reference") -
                           cld::Columns().begin();
  for (size_t r = 1; r < rows->size(); ++r) references.insert((*rows)[r][reference]);
  EXPECT_EQ(references.size(), static_cast<size_t>(kRows));
  EXPECT_TRUE(references.contains("ASM-17"));
  EXPECT_TRUE(references.contains("ASM-18"));
  for (int i : {0, 1, 17, 9999, 19999}) {
    EXPECT_EQ(got.payload.find(SyntheticNhsNumber(i)), std::string::npos) << "pseudonymised";
  }
  EXPECT_EQ(got.payload.find("Family"), std::string::npos) << "names are not released";
  EXPECT_EQ(got.payload.find("1AB"), std::string::npos) << "postcodes cut to the district";
  ASSERT_TRUE(rx.Ack(receipt.message_id()));

  // The accepted entry: the rows released and withheld, the digest
  // chained over the chunks as sent.
  AuditRun q = AuditCli(*broker_, "ig-officer", {"--format", "json", "query", "--event", "send-accepted"});
  ASSERT_EQ(q.rc, 0) << q.err;
  EXPECT_THAT(q.out, ::testing::HasSubstr("CLD submission: 20000 rows, 20000 released, 0 withheld; CLD out"));
  EXPECT_EQ(q.out.find(SyntheticNhsNumber(17)), std::string::npos);

  // Every row is an entry about its person, so person 17's subject access
  // report shows their row in the return, and what became of the return.
  const std::string n17 = SyntheticNhsNumber(17);
  AuditRun mine = AuditCli(*broker_, "ig-officer", {"--format", "json", "query", "--nhs-number", n17});
  ASSERT_EQ(mine.rc, 0) << mine.err;
  const nlohmann::json entries = nlohmann::json::parse(mine.out);
  ASSERT_EQ(entries.size(), 2u) << "the opt-out recorded and the row";
  EXPECT_EQ(entries[1].at("event"), "row-released");
  EXPECT_EQ(entries[1].at("detail"), "CLD submission row 19") << "the header is row 1";
  EXPECT_EQ(entries[1].at("message"), receipt.message_id());
  EXPECT_EQ(entries[1].at("agreement").get<std::string>().rfind("DSA-ASC-CLD v", 0), 0u);
  AuditRun rows_in = AuditCli(*broker_, "ig-officer", {"--format", "csv", "query", "--event", "row-released"});
  ASSERT_EQ(rows_in.rc, 0) << rows_in.err;
  EXPECT_EQ(std::count(rows_in.out.begin(), rows_in.out.end(), '\n'), kRows + 1) << "the head and a line a row";

  AuditRun sar = AuditCli(*broker_, "ig-officer", {"--format", "json", "report", "sar", "--nhs-number", n17});
  ASSERT_EQ(sar.rc, 0) << sar.err;
  const nlohmann::json disclosures = nlohmann::json::parse(sar.out);
  ASSERT_EQ(disclosures.size(), 1u);
  EXPECT_EQ(disclosures[0].at("to"), "X26");
  EXPECT_EQ(disclosures[0].at("workflow"), "CLD_RETURN");
  EXPECT_EQ(disclosures[0].at("message"), receipt.message_id());
  EXPECT_NE(disclosures[0].at("delivered_at"), "not yet") << "the return's delivery, which names no one";
  EXPECT_THAT(disclosures[0].at("fields_released").get<std::string>(), ::testing::HasSubstr("person.nhs_number"));
  EXPECT_THAT(disclosures[0].at("fields_released").get<std::string>(), ::testing::Not(::testing::HasSubstr("names")));

  const std::string html = TempDir("cld-sar") + "/sar.html";
  AuditRun page = AuditCli(*broker_, "ig-officer",
                           {"--format", "html", "report", "sar", "--nhs-number", n17, "--out", html});
  ASSERT_EQ(page.rc, 0) << page.err;
  auto doc = ReadFileToString(html, "report");
  ASSERT_TRUE(doc.ok());
  EXPECT_NE(doc->find("one row of a return about many people"), std::string::npos);
  EXPECT_NE(doc->find("; received "), std::string::npos) << "delivered to and acknowledged by NHS England";
  EXPECT_NE(doc->find("1 disclosure to 1 organisation"), std::string::npos);
  EXPECT_EQ(doc->find(SyntheticNhsNumber(18)), std::string::npos) << "nothing about the others in the return";
  EXPECT_EQ(doc->find("Given17"), std::string::npos);
}

TEST_F(CldSubmissionTest, ARowInAReturnNotYetCompleteIsInTheLogButNotShownAsDelivered) {
  const std::string file = Return(50);
  v1::SendRequest start = Req("X26", "", file.substr(0, file.size() / 2));
  start.set_workflow("CLD_RETURN");
  start.set_purpose("planning");
  start.set_content_type("text/csv; profile=asc-cld-release-1");
  v1::SendReceipt receipt;
  grpc::Status s = SendLarge(*council_, {Start(start, 2)}, &receipt);
  ASSERT_EQ(ErrorReason(s), "CHUNKS_INCOMPLETE");
  const std::string html = TempDir("cld-sar-incomplete") + "/sar.html";
  AuditRun page = AuditCli(*broker_, "ig-officer",
                           {"--format", "html", "report", "sar", "--nhs-number", SyntheticNhsNumber(3), "--out", html});
  ASSERT_EQ(page.rc, 0) << page.err;
  auto doc = ReadFileToString(html, "report");
  ASSERT_TRUE(doc.ok());
  EXPECT_NE(doc->find("one row of a return about many people"), std::string::npos) << "decided, and so audited";
  EXPECT_NE(doc->find("not delivered: the return was still being sent, or was never completed"), std::string::npos);
  // A row of the second half was never read: nothing about that person.
  AuditRun later = AuditCli(*broker_, "ig-officer", {"--format", "json", "query", "--nhs-number", SyntheticNhsNumber(49)});
  ASSERT_EQ(later.rc, 0) << later.err;
  EXPECT_TRUE(nlohmann::json::parse(later.out).empty());
}

TEST_F(CldSubmissionTest, AReturnIsNotRedirectedOrResent) {
  v1::SendRequest start = Req("X26", "", Return(40));
  start.set_workflow("CLD_RETURN");
  start.set_purpose("planning");
  start.set_content_type("text/csv; profile=asc-cld-release-1");
  v1::SendReceipt receipt;
  ASSERT_TRUE(Call(&v1::Exchange::Stub::Send, *council_, start, &receipt).ok());
  ASSERT_TRUE(RejectAs(*nhse_, receipt.message_id(), "WRONG_PERIOD").ok());
  grpc::Status s =
      OperatorAct(*broker_, v1::MESSAGE_ACTION_RESEND, receipt.message_id(), "", "sent for the wrong quarter (INC0301)");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ErrorReason(s), "MESSAGE_NOT_RESENDABLE") << "its rows are pseudonyms: nothing to decide them for";
}

TEST_F(CldSubmissionTest, ABadRowInALaterChunkEndsTheSendNamingItsRowAndCareRecordsStillCannotBeChunked) {
  const std::string file = Return(300);
  const size_t cut = file.size() / 2;
  v1::SendRequest start = Req("X26", "", file.substr(0, cut));
  start.set_workflow("CLD_RETURN");
  start.set_purpose("planning");
  start.set_content_type("text/csv; profile=asc-cld-release-1");
  // The second chunk's first whole row has a date that is no date.
  std::string bad = file.substr(cut);
  const size_t row = bad.find("\n503,") + 1;
  bad.replace(bad.find("2026-07-10", row), 10, "2026-02-31");
  v1::SendReceipt receipt;
  grpc::Status s = SendLarge(*council_, {Start(start, 2), Chunk(bad)}, &receipt);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ErrorReason(s), "DATE_INVALID");
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("column Event Start Date"));
  EXPECT_EQ(s.error_message().find("2026-02-31"), std::string::npos) << "no value in an error";

  // A care record in chunks is still refused: it is decided whole.
  v1::SendRequest fhir = Req("X26", "", "{}");
  fhir.set_workflow("CLD_RETURN");
  fhir.set_purpose("planning");
  fhir.set_content_type("application/fhir+json");
  s = SendLarge(*council_, {Start(fhir, 2), Chunk("{}")}, &receipt);
  EXPECT_EQ(ErrorReason(s), "CHUNK_RANGE_INVALID");
}

}  // namespace
}  // namespace carebroker::testing
