// carebrokerctl against a real broker: output formats, files, exit codes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <map>
#include <sstream>

#include "broker/cli/ctl/ctl.h"
#include "tests/integration/harness.h"

namespace carebroker::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct CtlRun {
  int rc;
  std::string out, err;
};

class CtlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("ctl");
    broker_ = StartBroker(ConfigYaml(dir_ + "/data"), &SystemClock::Get());
    ASSERT_NE(broker_, nullptr);
    payload_ = dir_ + "/discharge.json";
    std::ofstream(payload_) << "{\"event\":\"discharge\"}";
  }

  CtlRun Ctl(const std::string& who, std::vector<std::string> args) {
    const std::string pki = PkiDir();
    std::vector<std::string> all = {"carebrokerctl",      "--target", broker_->address(),
                                    "--cert",             pki + "/" + who + ".crt",
                                    "--key",              pki + "/" + who + ".key",
                                    "--ca",               pki + "/ca.crt"};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    std::ostringstream out, err;
    int rc = RunCtl(static_cast<int>(argv.size()), argv.data(), out, err);
    return {rc, out.str(), err.str()};
  }

  std::string dir_, payload_;
  std::unique_ptr<Broker> broker_;
};

TEST_F(CtlTest, SendReceiveTrackInJson) {
  CtlRun sent = Ctl("RR8", {"--format", "json", "send", "--to", "503", "--workflow", "HOSPITAL_DISCHARGE", "--purpose",
                         "direct-care", "--idempotency-key", "adt-1", "--local-reference", "L-1", payload_});
  ASSERT_EQ(sent.rc, 0) << sent.err;
  json s = json::parse(sent.out);
  const std::string id = s.at("message_id");
  EXPECT_EQ(id.size(), 32u);
  EXPECT_FALSE(s.at("duplicate").get<bool>());

  CtlRun again = Ctl("RR8", {"--format", "json", "send", "--to", "503", "--workflow", "HOSPITAL_DISCHARGE", "--purpose",
                          "direct-care", "--idempotency-key", "adt-1", payload_});
  ASSERT_EQ(again.rc, 0) << again.err;
  EXPECT_EQ(json::parse(again.out).at("message_id"), id);
  EXPECT_TRUE(json::parse(again.out).at("duplicate").get<bool>());

  const std::string inbox = dir_ + "/inbox";
  CtlRun got = Ctl("503", {"--format", "json", "receive", "--out", inbox, "--max", "5", "--wait", "1"});
  ASSERT_EQ(got.rc, 0) << got.err;
  json g = json::parse(got.out);
  EXPECT_EQ(g.at("received"), 1);
  ASSERT_EQ(g.at("messages").size(), 1u);
  json meta = g.at("messages")[0];
  EXPECT_EQ(meta.at("file"), inbox + "/" + id + ".json");
  EXPECT_EQ(meta.at("message_id"), id);
  EXPECT_EQ(meta.at("sender"), "RR8");
  EXPECT_EQ(meta.at("workflow"), "HOSPITAL_DISCHARGE");
  EXPECT_EQ(meta.at("local_reference"), "L-1");
  EXPECT_EQ(meta.at("kind"), "DATA");
  EXPECT_EQ(meta.at("delivery_count"), 1);
  std::ifstream body(inbox + "/" + id + ".json");
  std::string content((std::istreambuf_iterator<char>(body)), {});
  EXPECT_EQ(content, "{\"event\":\"discharge\"}");
  int files = 0;
  for (const auto& e : fs::directory_iterator(inbox)) {
    EXPECT_NE(e.path().filename().string()[0], '.') << "temporary file left behind";
    ++files;
  }
  EXPECT_EQ(files, 1) << "one file per message";

  CtlRun t = Ctl("RR8", {"--format", "json", "track", id});
  ASSERT_EQ(t.rc, 0) << t.err;
  json tr = json::parse(t.out);
  EXPECT_EQ(tr.at("status"), "ACKNOWLEDGED");  // receive acked after writing
  EXPECT_EQ(tr.at("recipient"), "503");
  EXPECT_NE(tr.at("acknowledged_at"), "");

  CtlRun text = Ctl("RR8", {"track", id});
  EXPECT_EQ(text.rc, 0);
  EXPECT_NE(text.out.find("status: ACKNOWLEDGED"), std::string::npos) << text.out;

  // The sender tracks it by its own idempotency key as well; no one else can.
  CtlRun by_key = Ctl("RR8", {"--format", "json", "track", "--key", "adt-1"});
  ASSERT_EQ(by_key.rc, 0) << by_key.err;
  EXPECT_EQ(json::parse(by_key.out).at("message_id"), id);
  EXPECT_EQ(json::parse(by_key.out).at("status"), "ACKNOWLEDGED");
  CtlRun not_theirs = Ctl("503", {"track", "--key", "adt-1"});
  EXPECT_EQ(not_theirs.rc, 1);
  EXPECT_THAT(not_theirs.err, ::testing::HasSubstr("NOT_FOUND MESSAGE_NOT_FOUND"));
  CtlRun unknown = Ctl("RR8", {"track", "--key", "adt-2"});
  EXPECT_EQ(unknown.rc, 1);
  EXPECT_THAT(unknown.err, ::testing::HasSubstr("no message with that idempotency key"));
  EXPECT_EQ(Ctl("RR8", {"track", id, "--key", "adt-1"}).rc, 2) << "one of the two";
  EXPECT_EQ(Ctl("RR8", {"track"}).rc, 2);
}

TEST_F(CtlTest, AFileOverTheChunkSizeGoesInChunksAndComesBackWhole) {
  // 9 MiB and a bit, over the 8 MiB a Send takes: three 4 MiB chunks.
  const std::string pdf = dir_ + "/letter.pdf";
  std::string bytes(9 * (1 << 20) + 11, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 7919) % 253);
  std::ofstream(pdf, std::ios::binary) << bytes;
  CtlRun sent = Ctl("RR8", {"--format", "json", "send", "--to", "503", "--workflow", "HOSPITAL_DISCHARGE", "--purpose",
                         "direct-care", pdf});
  ASSERT_EQ(sent.rc, 0) << sent.err;
  const std::string id = json::parse(sent.out).at("message_id");
  CtlRun t = Ctl("RR8", {"--format", "json", "track", id});
  EXPECT_EQ(json::parse(t.out).at("status"), "ACCEPTED") << "whole: every chunk is stored";

  const std::string inbox = dir_ + "/large-in";
  CtlRun got = Ctl("503", {"--format", "json", "receive", "--out", inbox, "--max", "1", "--wait", "2"});
  ASSERT_EQ(got.rc, 0) << got.err;
  ASSERT_EQ(json::parse(got.out).at("received"), 1);
  std::ifstream body(inbox + "/" + id + ".pdf", std::ios::binary);
  std::string content((std::istreambuf_iterator<char>(body)), {});
  EXPECT_EQ(content.size(), bytes.size());
  EXPECT_TRUE(content == bytes) << "downloaded whole and in order";
  for (const auto& e : fs::directory_iterator(inbox)) {
    EXPECT_NE(e.path().filename().string()[0], '.') << "part file left behind";
  }
  EXPECT_EQ(json::parse(Ctl("RR8", {"--format", "json", "track", id}).out).at("status"), "ACKNOWLEDGED");

  // More than 10000 chunks is refused before anything is sent.
  CtlRun tiny = Ctl("RR8", {"send", "--to", "503", "--workflow", "HOSPITAL_DISCHARGE", "--purpose", "direct-care",
                         "--chunk-mib", "0", pdf});
  EXPECT_NE(tiny.rc, 0);
  // Nor a chunk over the 32 MiB a SendLarge chunk may hold.
  CtlRun huge = Ctl("RR8", {"send", "--to", "503", "--workflow", "HOSPITAL_DISCHARGE", "--purpose", "direct-care",
                         "--chunk-mib", "33", pdf});
  EXPECT_NE(huge.rc, 0);
  EXPECT_THAT(huge.err, ::testing::HasSubstr("--chunk-mib"));
}

TEST_F(CtlTest, ReceiveInTextListsEachFileAndStopsAtMax) {
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(Ctl("RR8", {"send", "--to", "503", "--workflow", "CARE_PACKAGE_STARTED", "--purpose", "direct-care",
                          payload_})
                  .rc,
              0);
  }
  CtlRun got = Ctl("503", {"receive", "--out", dir_ + "/in", "--max", "2", "--wait", "2"});
  ASSERT_EQ(got.rc, 0) << got.err;
  EXPECT_NE(got.out.find("from RR8  CARE_PACKAGE_STARTED"), std::string::npos) << got.out;
  EXPECT_NE(got.out.find("received 2 messages into " + dir_ + "/in"), std::string::npos) << got.out;
  // The third is still waiting, unacknowledged, for the next receive.
  CtlRun rest = Ctl("503", {"receive", "--out", dir_ + "/in", "--wait", "1"});
  ASSERT_EQ(rest.rc, 0) << rest.err;
  EXPECT_NE(rest.out.find("received 1 message into"), std::string::npos) << rest.out;
}

TEST_F(CtlTest, ReceiveWithNothingWaitingEndsAfterWait) {
  CtlRun got = Ctl("503", {"receive", "--out", dir_ + "/empty", "--wait", "0.3"});
  EXPECT_EQ(got.rc, 0) << got.err;
  EXPECT_EQ(got.out, "received 0 messages into " + dir_ + "/empty\n");
}

TEST_F(CtlTest, AckByIdReportsEachId) {
  CtlRun sent = Ctl("RR8", {"send", "--to", "503", "--workflow", "REFERRAL", "--purpose", "direct-care", payload_});
  ASSERT_EQ(sent.rc, 0);
  const std::string id = sent.out.substr(0, 32);
  CtlRun ack = Ctl("503", {"ack", id, "0123456789abcdef0123456789abcdef"});
  EXPECT_EQ(ack.rc, 1);  // one id was not found
  EXPECT_NE(ack.out.find(id + " acknowledged"), std::string::npos) << ack.out;
  EXPECT_NE(ack.out.find("0123456789abcdef0123456789abcdef not found"), std::string::npos);
}

TEST_F(CtlTest, RejectHoldsAMessageAndTrackShowsWhy) {
  CtlRun sent = Ctl("RR8", {"send", "--to", "503", "--workflow", "REFERRAL", "--purpose", "direct-care", payload_});
  ASSERT_EQ(sent.rc, 0);
  const std::string id = sent.out.substr(0, 32);
  CtlRun r = Ctl("503", {"reject", id, "--code", "UNKNOWN_PATIENT", "--text", "no such person on our system"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, id + " HELD\n");
  json t = json::parse(Ctl("RR8", {"--format", "json", "track", id}).out);
  EXPECT_EQ(t.at("status"), "HELD");
  EXPECT_EQ(t.at("held_reason"), "REJECTED_BY_RECIPIENT");
  EXPECT_EQ(t.at("rejection_code"), "UNKNOWN_PATIENT");
  EXPECT_EQ(t.at("rejection_text"), "no such person on our system");
  EXPECT_NE(t.at("held_at"), "");
  CtlRun acked = Ctl("503", {"ack", id});
  EXPECT_EQ(acked.rc, 0) << "a held message may still be acknowledged";
  CtlRun again = Ctl("503", {"--format", "json", "reject", id, "--code", "AE"});
  EXPECT_EQ(again.rc, 1) << "not held: it is acknowledged";
  EXPECT_EQ(json::parse(again.out).at("status"), "ACKNOWLEDGED");
  CtlRun bad = Ctl("503", {"reject", id, "--code", "two words"});
  EXPECT_EQ(bad.rc, 1);
  EXPECT_NE(bad.err.find("INVALID_ARGUMENT REJECTION_INVALID"), std::string::npos) << bad.err;
  EXPECT_EQ(Ctl("503", {"reject", id}).rc, 2) << "--code is required";
}

TEST_F(CtlTest, AnOperatorSeesEveryMailboxFindsHeldMessagesAndReleasesOrCancelsThem) {
  auto send = [&](const std::string& ref) {
    CtlRun sent = Ctl("RR8", {"send", "--to", "503", "--workflow", "REFERRAL", "--purpose", "direct-care",
                              "--local-reference", ref, payload_});
    EXPECT_EQ(sent.rc, 0) << sent.err;
    return sent.out.substr(0, 32);
  };
  const std::string a = send("REF-A"), b = send("REF-B");
  send("REF-C");
  ASSERT_EQ(Ctl("503", {"reject", a, "--code", "UNKNOWN_PATIENT"}).rc, 0);
  ASSERT_EQ(Ctl("503", {"reject", b, "--code", "AE"}).rc, 0);

  // The overview: the council has one waiting and two held; the trust two reports.
  CtlRun list = Ctl("operator", {"--format", "json", "mailbox", "list"});
  ASSERT_EQ(list.rc, 0) << list.err;
  std::map<std::string, json> boxes;
  for (const json& m : json::parse(list.out)) boxes[m.at("organisation")] = m;
  ASSERT_EQ(boxes.count("503"), 1u) << list.out;
  EXPECT_EQ(boxes["503"].at("depth"), 1);
  EXPECT_EQ(boxes["503"].at("held"), 2);
  EXPECT_EQ(boxes["503"].at("name"), "Lincolnshire County Council");
  EXPECT_NE(boxes["503"].at("oldest_unacknowledged_at"), "");
  EXPECT_EQ(boxes["RR8"].at("depth"), 2) << "the two non-delivery reports";
  CtlRun table = Ctl("operator", {"mailbox", "list"});
  EXPECT_THAT(table.out, ::testing::StartsWith("ORGANISATION  DEPTH  OLDEST  HELD  STREAMS  NAME\n"));

  // The search: metadata only.
  CtlRun found = Ctl("operator", {"--format", "json", "messages", "find", "--recipient", "503", "--state", "held"});
  ASSERT_EQ(found.rc, 0) << found.err;
  json f = json::parse(found.out);
  ASSERT_EQ(f.at("messages").size(), 2u) << found.out;
  EXPECT_EQ(f.at("messages")[0].at("message_id"), a);
  EXPECT_EQ(f.at("messages")[0].at("status"), "held");
  EXPECT_EQ(f.at("messages")[0].at("rejection_code"), "UNKNOWN_PATIENT");
  EXPECT_EQ(f.at("messages")[0].at("local_reference"), "REF-A");
  EXPECT_EQ(f.at("messages")[0].at("bytes"), 21);
  EXPECT_EQ(found.out.find("discharge"), std::string::npos) << "never the content";
  CtlRun page = Ctl("operator", {"--format", "json", "messages", "find", "--sender", "RR8", "--limit", "1"});
  ASSERT_EQ(page.rc, 0) << page.err;
  const std::string token = json::parse(page.out).at("next_page_token");
  CtlRun next = Ctl("operator", {"--format", "json", "messages", "find", "--sender", "RR8", "--limit", "1",
                                 "--page-token", token});
  EXPECT_EQ(json::parse(next.out).at("messages")[0].at("message_id"), b);
  CtlRun since = Ctl("operator", {"--format", "json", "messages", "find", "--recipient", "503", "--from",
                                  "2000-01-01T00:00:00Z", "--until", "2999-01-01T00:00:00Z"});
  EXPECT_EQ(json::parse(since.out).at("messages").size(), 3u) << since.out;
  CtlRun before = Ctl("operator", {"--format", "json", "messages", "find", "--until", "2000-01-01T00:00:00Z"});
  EXPECT_EQ(json::parse(before.out).at("messages").size(), 0u) << before.out;
  EXPECT_EQ(Ctl("operator", {"messages", "find", "--state", "lost"}).rc, 2);
  EXPECT_EQ(Ctl("operator", {"messages", "find", "--from", "yesterday"}).rc, 2);

  // Release one, cancel the other; each needs a justification and is audited.
  EXPECT_EQ(Ctl("operator", {"message", "release", a}).rc, 2) << "--justification is required";
  CtlRun blank = Ctl("operator", {"message", "release", a, "--justification", " "});
  EXPECT_EQ(blank.rc, 1);
  EXPECT_NE(blank.err.find("JUSTIFICATION_INVALID"), std::string::npos) << blank.err;
  CtlRun released = Ctl("operator", {"message", "release", a, "--justification", "patient registered (INC0042)"});
  ASSERT_EQ(released.rc, 0) << released.err;
  EXPECT_EQ(released.out, a + " accepted\n");
  CtlRun again = Ctl("operator", {"message", "release", a, "--justification", "twice"});
  EXPECT_EQ(again.rc, 1);
  EXPECT_NE(again.err.find("FAILED_PRECONDITION MESSAGE_NOT_HELD"), std::string::npos) << again.err;
  ASSERT_EQ(Ctl("operator", {"message", "cancel", b, "--justification", "sender resent it (INC0043)"}).rc, 0);
  EXPECT_EQ(json::parse(Ctl("RR8", {"--format", "json", "track", b}).out).at("status"), "CANCELLED");
  // An agency cannot do any of it.
  CtlRun agency = Ctl("503", {"message", "release", b, "--justification", "x"});
  EXPECT_EQ(agency.rc, 1);
  EXPECT_NE(agency.err.find("PERMISSION_DENIED"), std::string::npos) << agency.err;
  EXPECT_EQ(Ctl("RR8", {"mailbox", "list"}).rc, 1);

  // The released message is delivered again.
  const std::string inbox = dir_ + "/op-inbox";
  CtlRun got = Ctl("503", {"--format", "json", "receive", "--out", inbox, "--max", "5", "--wait", "1"});
  ASSERT_EQ(got.rc, 0) << got.err;
  EXPECT_EQ(json::parse(got.out).at("received"), 2) << "REF-A released, REF-C";
  EXPECT_TRUE(fs::exists(inbox + "/" + a + ".json"));

  // Redirect one to another council, resend another to its own: each a new send.
  const std::string c = send("REF-D"), e = send("REF-E");
  ASSERT_EQ(Ctl("503", {"reject", c, "--code", "NOT_OUR_AREA"}).rc, 0);
  ASSERT_EQ(Ctl("503", {"reject", e, "--code", "AE"}).rc, 0);
  EXPECT_EQ(Ctl("operator", {"message", "redirect", c, "--justification", "x"}).rc, 2) << "--to is required";
  CtlRun redirected = Ctl("operator", {"--format", "json", "message", "redirect", c, "--to", "511", "--justification",
                                       "the person moved (INC0044)"});
  ASSERT_EQ(redirected.rc, 0) << redirected.err;
  json rd = json::parse(redirected.out);
  EXPECT_EQ(rd.at("message_id"), c);
  EXPECT_EQ(rd.at("status"), "accepted");
  EXPECT_EQ(rd.at("recipient"), "511");
  EXPECT_EQ(rd.at("flow"), "synthetic-opaque");
  const std::string moved = rd.at("new_message_id");
  EXPECT_EQ(json::parse(Ctl("RR8", {"--format", "json", "track", c}).out).at("replaced_by"), moved);
  EXPECT_EQ(json::parse(Ctl("RR8", {"--format", "json", "track", moved}).out).at("replaces"), c);
  CtlRun resent = Ctl("operator", {"message", "resend", e, "--justification", "consumer fixed (INC0045)"});
  ASSERT_EQ(resent.rc, 0) << resent.err;
  EXPECT_THAT(resent.out, ::testing::StartsWith(e + " replaced by ")) << resent.out;
  EXPECT_THAT(resent.out, ::testing::HasSubstr(" to 503 accepted (TEST-EXCHANGE/synthetic-opaque)")) << resent.out;
  CtlRun twice = Ctl("operator", {"message", "resend", e, "--justification", "again"});
  EXPECT_EQ(twice.rc, 1);
  EXPECT_NE(twice.err.find("FAILED_PRECONDITION MESSAGE_NOT_RESENDABLE"), std::string::npos) << twice.err;
  CtlRun found_moved =
      Ctl("operator", {"--format", "json", "messages", "find", "--sender", "RR8", "--local-reference", "REF-D"});
  ASSERT_EQ(json::parse(found_moved.out).at("messages").size(), 2u) << found_moved.out;
  EXPECT_EQ(json::parse(found_moved.out).at("messages")[0].at("replaced_by"), moved);

  AuditRun report = AuditCli(*broker_, "ig-officer", {"--format", "json", "report", "operator-actions"});
  ASSERT_EQ(report.rc, 0) << report.err;
  json r = json::parse(report.out);
  ASSERT_EQ(r.size(), 4u) << report.out;
  EXPECT_EQ(r[2].at("action"), "redirect");
  EXPECT_EQ(r[2].at("message"), c);
  EXPECT_EQ(r[2].at("detail"), absl::StrCat("as message ", moved, " to 511"));
  EXPECT_EQ(r[3].at("action"), "resend");
  EXPECT_EQ(r[3].at("justification"), "consumer fixed (INC0045)");
  EXPECT_EQ(r[0].at("operator"), "X26");
  EXPECT_EQ(r[0].at("action"), "release");
  EXPECT_EQ(r[0].at("message"), a);
  EXPECT_EQ(r[0].at("justification"), "patient registered (INC0042)");
  EXPECT_EQ(r[1].at("action"), "cancel");
  EXPECT_EQ(r[1].at("justification"), "sender resent it (INC0043)");
}

TEST_F(CtlTest, BrokerRefusalsExitOneWithCodeAndReason) {
  CtlRun r = Ctl("RR8", {"send", "--to", "999", "--workflow", "HOSPITAL_DISCHARGE", "--purpose", "direct-care", payload_});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("FAILED_PRECONDITION UNKNOWN_RECIPIENT"), std::string::npos) << r.err;
  r = Ctl("RR8", {"track", "0123456789abcdef0123456789abcdef"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("NOT_FOUND MESSAGE_NOT_FOUND"), std::string::npos) << r.err;
  r = Ctl("ig-officer", {"track", "0123456789abcdef0123456789abcdef"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("PERMISSION_DENIED ROLE_NOT_ALLOWED"), std::string::npos) << r.err;
  r = Ctl("RR8", {"send", "--to", "503", "--workflow", "discharge", "--purpose", "direct-care", payload_});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("INVALID_ARGUMENT WORKFLOW_INVALID"), std::string::npos) << r.err;
}

TEST_F(CtlTest, LocalErrorsExitTwo) {
  EXPECT_EQ(Ctl("RR8", {"send", "--to", "503", "--workflow", "W", "--purpose", "p", dir_ + "/absent"}).rc, 2);
  EXPECT_EQ(Ctl("RR8", {"--format", "yaml", "track", "x"}).rc, 2);
  EXPECT_EQ(Ctl("RR8", {"send", "--to", "503"}).rc, 2);  // missing required flags
  EXPECT_EQ(Ctl("RR8", {}).rc, 2);                        // no command

  // No certificate configured at all.
  std::ostringstream out, err;
  std::vector<std::string> args = {"carebrokerctl", "--target", broker_->address(), "track", "x"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  ::unsetenv("CAREBROKER_CERT");
  EXPECT_EQ(RunCtl(static_cast<int>(argv.size()), argv.data(), out, err), 2);
  EXPECT_NE(err.str().find("--cert, --key and --ca"), std::string::npos);
}

TEST_F(CtlTest, EnvironmentSuppliesConnectionSettings) {
  const std::string pki = PkiDir();
  ::setenv("CAREBROKER_TARGET", broker_->address().c_str(), 1);
  ::setenv("CAREBROKER_CERT", (pki + "/RR8.crt").c_str(), 1);
  ::setenv("CAREBROKER_KEY", (pki + "/RR8.key").c_str(), 1);
  ::setenv("CAREBROKER_CA", (pki + "/ca.crt").c_str(), 1);
  std::vector<std::string> args = {"carebrokerctl", "send",        "--to", "503", "--workflow", "HOSPITAL_DISCHARGE",
                                   "--purpose",     "direct-care", payload_};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  std::ostringstream out, err;
  EXPECT_EQ(RunCtl(static_cast<int>(argv.size()), argv.data(), out, err), 0) << err.str();
  EXPECT_EQ(out.str().size(), 33u);  // id and newline
  for (const char* v : {"CAREBROKER_TARGET", "CAREBROKER_CERT", "CAREBROKER_KEY", "CAREBROKER_CA"}) ::unsetenv(v);
}

TEST_F(CtlTest, PolicyLintNamesEveryErrorAndExitsNonZero) {
  CtlRun ok = Ctl("RR8", {"policy", "lint", std::string(std::getenv("CB_SOURCE_DIR")) + "/deploy/agreements"});
  EXPECT_EQ(ok.rc, 0) << ok.err;
  EXPECT_NE(ok.out.find("5 agreements, 7 flows, valid"), std::string::npos) << ok.out;
  const std::string bad = dir_ + "/bad";
  std::filesystem::create_directories(bad);
  std::ofstream(bad + "/a.yaml") << "id: DSA-A\ntitle: t\nversion: \"1\"\nvalid_from: 2026-01-01\nvalid_until: 2025-01-01\n"
                                    "flows: []\n";
  CtlRun lint = Ctl("RR8", {"policy", "lint", bad});
  EXPECT_EQ(lint.rc, 1);
  EXPECT_NE(lint.err.find(bad + "/a.yaml:5: valid_until: is before valid_from"), std::string::npos) << lint.err;
  EXPECT_NE(lint.err.find(bad + "/a.yaml:6: flows: required"), std::string::npos) << lint.err;
}

TEST_F(CtlTest, ConvertRunsTheAdaptersOfflineAndNamesErrors) {
  const std::string hl7 = std::string(std::getenv("CB_SOURCE_DIR")) + "/adapters/testdata/hl7v2/";
  CtlRun council = Ctl("RR8", {"convert", "--from", "hl7v2", "--to", "council-json", hl7 + "adt_a03.hl7"});
  ASSERT_EQ(council.rc, 0) << council.err;
  const auto doc = json::parse(council.out);
  EXPECT_EQ(doc["person"]["nhsNumber"], "9990000018");
  EXPECT_EQ(doc["events"][0]["discharge"]["dischargeDestination"], "54");
  CtlRun fhir = Ctl("RR8", {"convert", "--from", "hl7v2", "--to", "fhir", "--sender", "RR8", "--recipient", "Y06601",
                            hl7 + "adt_a01.hl7"});
  ASSERT_EQ(fhir.rc, 0) << fhir.err;
  EXPECT_EQ(json::parse(fhir.out)["entry"][0]["resource"]["source"]["endpoint"], "urn:nhs-uk:addressing:ods:RR8");
  CtlRun bad = Ctl("RR8", {"convert", "--from", "hl7v2", "--to", "fhir", hl7 + "bad_nhs_number.hl7"});
  EXPECT_EQ(bad.rc, 1);
  EXPECT_NE(bad.err.find("NHS_NUMBER_INVALID: PID-3 repetition 1"), std::string::npos) << bad.err;
  EXPECT_EQ(bad.out, "");
  CtlRun kept = Ctl("RR8", {"convert", "--from", "hl7v2", "--to", "canonical-json", "--keep-invalid-nhs-number",
                            hl7 + "bad_nhs_number.hl7"});
  EXPECT_EQ(kept.rc, 0) << kept.err;
  CtlRun cannot = Ctl("RR8", {"convert", "--from", "council-json", "--to", "hl7v2",
                              std::string(std::getenv("CB_SOURCE_DIR")) + "/adapters/testdata/council/care_package.json"});
  EXPECT_EQ(cannot.rc, 1);
  EXPECT_NE(cannot.err.find("HL7_UNSUPPORTED"), std::string::npos) << cannot.err;
  CtlRun unknown = Ctl("RR8", {"convert", "--from", "xml", "--to", "fhir", hl7 + "adt_a01.hl7"});
  EXPECT_EQ(unknown.rc, 2);
}

TEST_F(CtlTest, PolicyTestRunsTheCaseTableOffline) {
  const std::string src = std::getenv("CB_SOURCE_DIR");
  CtlRun ok = Ctl("RR8", {"policy", "test", src + "/deploy/agreements", src + "/deploy/agreement-cases.yaml"});
  EXPECT_EQ(ok.rc, 0) << ok.out << ok.err;
  EXPECT_NE(ok.out.find("PASS discharge notice from a trust to the council"), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("13 passed, 0 failed"), std::string::npos) << ok.out;

  const std::string cases = dir_ + "/cases.yaml";
  std::ofstream(cases) << "cases:\n"
                          "  - name: wrong expectation\n"
                          "    sender: RR8\n    sender_kind: nhs-trust\n"
                          "    recipient: Y06601\n    recipient_kind: gp-practice\n"
                          "    workflow: HOSPITAL_DISCHARGE\n    purpose: research\n"
                          "    expect: {decision: allow}\n";
  CtlRun fail = Ctl("RR8", {"--format", "json", "policy", "test", src + "/deploy/agreements", cases});
  EXPECT_EQ(fail.rc, 1) << fail.err;
  json j = json::parse(fail.out);
  EXPECT_EQ(j.at("failed"), 1);
  EXPECT_EQ(j.at("cases")[0].at("failures")[0], "decision: expected allow, got deny (NO_AGREEMENT)");

  std::ofstream(cases) << "cases:\n  - {name: x, sender: RR8, purpose: [oops]}\n";
  CtlRun bad = Ctl("RR8", {"policy", "test", src + "/deploy/agreements", cases});
  EXPECT_EQ(bad.rc, 2);
  EXPECT_NE(bad.err.find(cases + ":2: cases[0].purpose"), std::string::npos) << bad.err;
  CtlRun no_dir = Ctl("RR8", {"policy", "test", dir_ + "/nowhere", cases});
  EXPECT_EQ(no_dir.rc, 2);
}

TEST_F(CtlTest, PolicyExplainShowsTheDecidingFlowAndTheFields) {
  const std::string src = std::getenv("CB_SOURCE_DIR");
  const std::vector<std::string> request = {"policy", "explain", src + "/deploy/agreements", "--sender", "503",
                                            "--sender-kind", "local-authority", "--recipient", "X26",
                                            "--recipient-kind", "nhs-england", "--workflow", "CLD_RETURN",
                                            "--purpose", "planning", "--date", "2026-11-20"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = request;
    args.insert(args.end(), extra.begin(), extra.end());
    return Ctl("RR8", args);
  };
  CtlRun ok = with({"--record", src + "/deploy/examples/discharge.json"});
  ASSERT_EQ(ok.rc, 0) << ok.err;
  EXPECT_NE(ok.out.find("DSA-ASC-CLD v1.4 flow quarterly-return: allows"), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("legal basis: article 6 legal-obligation; article 9 health-or-social-care"),
            std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("national data opt-out: does not apply: exempt, required-by-law (Health and Social Care Act "
                        "2012 s259"),
            std::string::npos)
      << ok.out;
  EXPECT_NE(ok.out.find("person.nhs_number: pseudonymised for the recipient"), std::string::npos) << ok.out;
  const size_t withheld = ok.out.find("withheld:\n");
  ASSERT_NE(withheld, std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("  person.names\n", withheld), std::string::npos) << ok.out;
  EXPECT_EQ(ok.out.find("9990000018"), std::string::npos) << "values are never printed";

  CtlRun opted = with({"--opt-out"});
  EXPECT_EQ(opted.rc, 0) << opted.err;
  EXPECT_NE(opted.out.find("decision: allow under DSA-ASC-CLD v1.4 flow quarterly-return"), std::string::npos)
      << "the return is required by law: " << opted.out;
  // Where the opt-out applies, the denial names the rule (not "does not apply").
  std::vector<std::string> applies = request;
  applies[2] = CldAgreementWithOptOutApplying(dir_);
  applies.push_back("--opt-out");
  CtlRun denied = Ctl("RR8", applies);
  EXPECT_EQ(denied.rc, 0) << denied.err;
  EXPECT_NE(denied.out.find("decision: deny (NATIONAL_OPT_OUT) by DSA-ASC-CLD v1.4 flow quarterly-return"),
            std::string::npos) << denied.out;
  EXPECT_NE(denied.out.find("national data opt-out: applies: the agreement says so (s251 support (synthetic))"),
            std::string::npos) << denied.out;

  CtlRun bad = with({"--dissent", "planning@not a code"});
  EXPECT_EQ(bad.rc, 2);
  EXPECT_NE(bad.err.find("neither an ODS code nor an organisation kind"), std::string::npos) << bad.err;
}

TEST_F(CtlTest, ConsentAndReloadAgainstTheBroker) {
  CtlRun rec = Ctl("Y06601", {"consent", "record", "--nhs-number", "9434765919", "--dissent", "--purpose",
                              "direct-care", "--scope-kind", "local-authority", "--source", "consultation",
                              "--recorded-by", "Dr Synthetic"});
  ASSERT_EQ(rec.rc, 0) << rec.err;
  const std::string id = json::parse(rec.out).at("id");
  // The dissent is in force: the trust's care record to the council is refused.
  const std::string record = dir_ + "/record.json";
  std::ofstream(record) << R"({"person": {"nhsNumber": "9434765919"}, "events": [{"reference": "E1"}]})";
  CtlRun denied = Ctl("RR8", {"send", "--to", "503", "--workflow", "HOSPITAL_DISCHARGE", "--purpose", "direct-care",
                              "--care-record", record});
  EXPECT_EQ(denied.rc, 1);
  EXPECT_NE(denied.err.find("CONSENT_DISSENT"), std::string::npos) << denied.err;
  CtlRun show = Ctl("Y06601", {"consent", "show", "--nhs-number", "9434765919"});
  ASSERT_EQ(show.rc, 0) << show.err;
  EXPECT_EQ(json::parse(show.out).at("standing").size(), 1u);
  CtlRun wd = Ctl("Y06601", {"consent", "withdraw", "--nhs-number", "9434765919", "--directive", id, "--source",
                             "letter", "--recorded-by", "Dr Synthetic"});
  ASSERT_EQ(wd.rc, 0) << wd.err;
  CtlRun sent = Ctl("RR8", {"send", "--to", "503", "--workflow", "HOSPITAL_DISCHARGE", "--purpose", "direct-care",
                            "--care-record", record});
  EXPECT_EQ(sent.rc, 0) << sent.err;
  EXPECT_NE(sent.err.find("allowed by TEST-EXCHANGE v1 flow synthetic-care-record"), std::string::npos) << sent.err;
  EXPECT_EQ(Ctl("Y06601", {"consent", "opt-out", "--nhs-number", "9434765919", "--source", "s", "--recorded-by",
                           "r"}).rc,
            2);  // neither --set nor --clear

  // A person not yet traced, named by the council's own id for them.
  CtlRun local = Ctl("503", {"consent", "record", "--local-id", "SC-12345", "--assigner", "503", "--dissent",
                             "--purpose", "direct-care", "--source", "visit", "--recorded-by", "SW Synthetic"});
  ASSERT_EQ(local.rc, 0) << local.err;
  EXPECT_EQ(json::parse(local.out).at("localIdentifier").at("value"), "SC-12345");
  const std::string untraced = dir_ + "/untraced.json";
  std::ofstream(untraced) << R"({"person": {"localIdentifiers": [{"value": "SC-12345", "assigner": "503"}]},)"
                          << R"( "events": [{"reference": "E2"}]})";
  CtlRun refused = Ctl("RR8", {"send", "--to", "503", "--workflow", "HOSPITAL_DISCHARGE", "--purpose", "direct-care",
                               "--care-record", untraced});
  EXPECT_EQ(refused.rc, 1);
  EXPECT_NE(refused.err.find("CONSENT_DISSENT"), std::string::npos) << refused.err;
  CtlRun shown = Ctl("503", {"consent", "show", "--local-id", "SC-12345", "--assigner", "503"});
  ASSERT_EQ(shown.rc, 0) << shown.err;
  EXPECT_EQ(json::parse(shown.out).at("standing").size(), 1u);
  CtlRun nobody = Ctl("503", {"consent", "show", "--local-id", "SC-12345"});
  EXPECT_EQ(nobody.rc, 2) << "an identifier without its assigner names no one";
  EXPECT_NE(nobody.err.find("--assigner"), std::string::npos);

  CtlRun reload = Ctl("operator", {"policy", "reload"});
  EXPECT_EQ(reload.rc, 0) << reload.err;
  EXPECT_NE(reload.out.find("1 agreements, 3 flows in force"), std::string::npos) << reload.out;
  EXPECT_EQ(Ctl("RR8", {"policy", "reload"}).rc, 1);
  // The whole reload under its own name: what is in force, and the server certificate.
  CtlRun all = Ctl("operator", {"reload"});
  EXPECT_EQ(all.rc, 0) << all.err;
  EXPECT_NE(all.out.find("organisations; 1 agreements, 3 flows in force"), std::string::npos) << all.out;
  EXPECT_NE(all.out.find("server certificate "), std::string::npos) << all.out;
  EXPECT_NE(all.out.find("CRL in force, next due "), std::string::npos) << all.out;
}

}  // namespace
}  // namespace carebroker::testing
