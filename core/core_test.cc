#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "core/time.h"
#include "core/ids.h"
#include "core/files.h"
#include "core/metrics.h"
#include "core/nhs_number.h"
#include "core/sha256.h"
#include "core/status.h"
#include "core/yaml/yaml_proto.h"
#include "carebroker/v1/config.pb.h"
#include "carebroker/v1/options.pb.h"
#include "carebroker/v1/record.pb.h"

namespace carebroker {
namespace {

using ::testing::HasSubstr;

TEST(NhsNumber, ValidNumbersFromTheStandards) {
  for (const char* n : {"9000000009", "9912003888", "3333333333", "9413946000", "9476719931", "5189214567",
                        "9876543210", "9434765919"}) {
    EXPECT_TRUE(IsValidNhsNumber(n)) << n;
  }
}

TEST(NhsNumber, InvalidNumbersFromTheStandards) {
  for (const char* n : {"9912003890", "9000000015", "9333333333", "9871234567", "9876543219", "9100000009",
                        "91000000009", "", "943476591", "943 476 5919", "94347659l9"}) {
    EXPECT_FALSE(IsValidNhsNumber(n)) << n;
  }
}

TEST(NhsNumber, CheckDigitOfTenIsNeverIssued) {
  // 100000001x: sum = 1*10 + 1*2 = 12, remainder 1, check 11 - 1 = 10: no
  // final digit can make it valid.
  for (char last = '0'; last <= '9'; ++last) {
    EXPECT_FALSE(IsValidNhsNumber(std::string("100000001") + last)) << last;
  }
}

TEST(Hmac, RfcVectorsWhicheverKeyCameBefore) {
  // RFC 4231 test case 2, and the empty key and message; the thread's
  // context is keyed again when the key changes, and an empty key is a key.
  const std::string jefe = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
  const std::string empty = "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad";
  for (int round = 0; round < 2; ++round) {
    EXPECT_EQ(HmacSha256Hex("Jefe", "what do ya want for nothing?"), jefe);
    EXPECT_EQ(HmacSha256Hex("Jefe", "what do ya want for nothing?"), jefe) << "the same key again";
    EXPECT_EQ(HmacSha256Hex("", ""), empty);
  }
}

TEST(Ids, ShapeAndUniqueness) {
  const absl::Time t = absl::FromUnixSeconds(1'800'000'000);
  MessageId a = NewMessageId(t), b = NewMessageId(t);
  EXPECT_TRUE(IsMessageIdShape(a.str()));
  EXPECT_NE(a, b);
  EXPECT_LT(NewMessageId(t).str().substr(0, 12), NewMessageId(t + absl::Seconds(1)).str().substr(0, 12));
  EXPECT_FALSE(IsMessageIdShape("0123456789ABCDEF0123456789abcdef"));
  EXPECT_FALSE(IsMessageIdShape("0123"));
}

TEST(Status, ReasonTravelsWithTheStatus) {
  absl::Status s = Error(absl::StatusCode::kPermissionDenied, "NO_AGREEMENT", "no agreement covers this");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ReasonOf(s), "NO_AGREEMENT");
  EXPECT_EQ(ReasonOf(absl::InternalError("x")), "");
}

TEST(Durations, DaysAndAbslForms) {
  EXPECT_EQ(*ParseDurationWithDays("5d"), absl::Hours(120));
  EXPECT_EQ(*ParseDurationWithDays("30s"), absl::Seconds(30));
  EXPECT_EQ(*ParseDurationWithDays("1h30m"), absl::Minutes(90));
  EXPECT_FALSE(ParseDurationWithDays("five days").ok());
  EXPECT_FALSE(ParseDurationWithDays("-3s").ok());
  EXPECT_FALSE(ParseDurationWithDays("xd").ok());
}

TEST(YamlToProto, ReadsNestedMessagesListsEnumsAndDurations) {
  v1::BrokerConfig c;
  YamlLines lines;
  ASSERT_TRUE(YamlToProto(R"(listen: 127.0.0.1:1
delivery:
  expiry: 5d
  visibility_timeout: 45s
organisations:
  - {ods: RR8, name: Leeds, kind: nhs_trust}
  - ods: "503"
    name: Lincs
    kind: LOCAL_AUTHORITY
limits: {max_message_bytes: 1024}
)",
                          "c.yaml", &c, &lines)
                  .ok());
  EXPECT_EQ(c.listen(), "127.0.0.1:1");
  EXPECT_EQ(c.delivery().expiry().seconds(), 5 * 86400);
  EXPECT_EQ(c.delivery().visibility_timeout().seconds(), 45);
  ASSERT_EQ(c.organisations_size(), 2);
  EXPECT_EQ(c.organisations(0).kind(), v1::ORGANISATION_KIND_NHS_TRUST);
  EXPECT_EQ(c.organisations(1).ods(), "503");
  EXPECT_EQ(c.organisations(1).kind(), v1::ORGANISATION_KIND_LOCAL_AUTHORITY);
  EXPECT_EQ(c.limits().max_message_bytes(), 1024u);
  EXPECT_EQ(lines.at("organisations[1].kind"), 9);
}

TEST(YamlToProto, ErrorsNameFileLineAndKey) {
  v1::BrokerConfig c;
  struct Case {
    const char* yaml;
    const char* want;
  } cases[] = {
      {"listen: a\nlimts: {}\n", "c.yaml:2: limts: unknown key"},
      {"organisations:\n  - {ods: RR8, kind: hospital}\n",
       "c.yaml:2: organisations[0].kind: 'hospital' is not one of nhs-trust, gp-practice"},
      {"organisations:\n  - {ods: RR8, kind: unspecified}\n", "organisations[0].kind: 'unspecified' is not one of"},
      {"limits:\n  max_message_bytes: -5\n", "c.yaml:2: limits.max_message_bytes: expected a whole number, 0 or more"},
      {"delivery:\n  expiry: soon\n", "c.yaml:2: delivery.expiry: 'soon' is not a duration"},
      {"organisations: {ods: RR8}\n", "c.yaml:1: organisations: expected a list"},
      {"listen: [1, 2]\n", "c.yaml:1: listen: expected a single value"},
      {"store:\n  sqlite: {file: a}\n  sqlite: {file: b}\n", "c.yaml:"},
      {"listen: [1, 2\n", "c.yaml:"},
      {"listen: a\nlisten: b\n", "c.yaml:2: listen: appears twice"},
  };
  for (const auto& tc : cases) {
    absl::Status s = YamlToProto(tc.yaml, "c.yaml", &c);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << tc.yaml;
    EXPECT_THAT(std::string(s.message()), HasSubstr(tc.want)) << tc.yaml;
  }
}

// Aliases are read (a shared block written once), but a file whose aliases
// of aliases would yield more values than it has bytes is refused before it
// can take the broker's memory: this one, 30 KB, would be 8 million.
TEST(YamlToProto, AliasesMayNotMultiplyAFile) {
  v1::BrokerConfig c;
  ASSERT_TRUE(YamlToProto("organisations:\n  - &o {ods: RR8, name: Leeds, kind: nhs_trust}\n  - *o\n", "c.yaml", &c).ok());
  ASSERT_EQ(c.organisations_size(), 2);
  EXPECT_EQ(c.organisations(1).ods(), "RR8");

  std::string bomb = "organisations:\n  - &o {ods: RR8, name: Leeds, kind: nhs_trust, receives_by_workflow: {";
  for (int i = 0; i < 2000; ++i) absl::StrAppend(&bomb, i ? "," : "", "W", i, ": x");
  bomb += "}}\n";
  for (int i = 0; i < 2000; ++i) bomb += "  - *o\n";
  absl::Status s = YamlToProto(bomb, "c.yaml", &c);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("anchors and aliases make this file more than"));

  std::string deep = "listen: " + std::string(5000, '[') + std::string(5000, ']') + "\n";
  s = YamlToProto(deep, "c.yaml", &c);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("levels deep or more"));
}

TEST(YamlError, UsesTheNearestRecordedLine) {
  YamlLines lines{{"organisations", 3}, {"organisations[1]", 5}};
  absl::Status s = YamlError("f.yaml", lines, "organisations[1].kind", "required");
  EXPECT_EQ(s.message(), "f.yaml:5: organisations[1].kind: required");
  EXPECT_EQ(YamlError("f.yaml", {}, "listen", "required").message(), "f.yaml: listen: required");
}

// Sensitivity lives in the schema: every canonical field is classified.
void ExpectClassified(const google::protobuf::Descriptor* d, std::set<const google::protobuf::Descriptor*>& seen) {
  if (!seen.insert(d).second) return;
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    if (d->file()->package() != "carebroker.v1") continue;
    EXPECT_NE(f->options().GetExtension(v1::sensitivity), v1::SENSITIVITY_UNSPECIFIED) << f->full_name();
    if (f->message_type() != nullptr && f->message_type()->file()->package() == "carebroker.v1") {
      ExpectClassified(f->message_type(), seen);
    }
  }
}

TEST(CanonicalRecord, EveryFieldHasASensitivity) {
  std::set<const google::protobuf::Descriptor*> seen;
  ExpectClassified(v1::CareRecord::descriptor(), seen);
  EXPECT_GT(seen.size(), 10u);
  EXPECT_EQ(v1::Person::descriptor()->FindFieldByName("nhs_number")->options().GetExtension(v1::sensitivity),
            v1::SENSITIVITY_IDENTIFIER);
}

TEST(Metrics, ExpositionIsPrometheusText) {
  metrics::Registry reg;
  auto& accepted = reg.AddCounters("cb_accepted_total", "Sends stored.", {"workflow"});
  accepted.With({"discharge"}).Inc();
  accepted.With({"discharge"}).Inc(2);
  accepted.With({"say \"hi\"\\\n"}).Inc();
  reg.AddGauge("cb_budget_bytes", "Bytes held.\nSecond line.").Set(1.5);
  auto& h = reg.AddHistogram("cb_commit_seconds", "Commit latency.", {0.001, 0.01});
  h.Observe(0.0005);
  h.Observe(0.001);  // on a bound: counted in that bucket (le is inclusive)
  h.Observe(0.5);
  reg.AddCollector("cb_depth", "Mailbox depth.", metrics::Type::kGauge, {"recipient"},
                   [] { return std::vector<metrics::Sample>{{{"503"}, 7}}; });
  const std::string text = reg.Exposition();
  EXPECT_THAT(text, ::testing::HasSubstr("# HELP cb_accepted_total Sends stored.\n# TYPE cb_accepted_total counter\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("cb_accepted_total{workflow=\"discharge\"} 3\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("cb_accepted_total{workflow=\"say \\\"hi\\\"\\\\\\n\"} 1\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("# HELP cb_budget_bytes Bytes held.\\nSecond line.\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("cb_budget_bytes 1.5\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("# TYPE cb_commit_seconds histogram\n"
                                         "cb_commit_seconds_bucket{le=\"0.001\"} 2\n"
                                         "cb_commit_seconds_bucket{le=\"0.01\"} 2\n"
                                         "cb_commit_seconds_bucket{le=\"+Inf\"} 3\n"
                                         "cb_commit_seconds_sum 0.5015\n"
                                         "cb_commit_seconds_count 3\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("cb_depth{recipient=\"503\"} 7\n"));
  // Registration order is exposition order.
  EXPECT_LT(text.find("cb_accepted_total"), text.find("cb_budget_bytes"));
  EXPECT_LT(text.find("cb_commit_seconds"), text.find("cb_depth"));
}

TEST(Metrics, MisuseIsAProgrammingErrorFoundAtStart) {
  metrics::Registry reg;
  reg.AddCounter("cb_x_total", "x");
  EXPECT_DEATH(reg.AddCounter("cb_x_total", "again"), "registered twice");
  EXPECT_DEATH(reg.AddCounter("cb_no_suffix", "x"), "_total");
  EXPECT_DEATH(reg.AddGauge("cb bad", "x"), "bad metric name");
  EXPECT_DEATH(reg.AddCounters("cb_y_total", "y", {"a"}).With({}), "one value per label");
}

TEST(Files, ProbeWritableNamesTheFolderWhenItCannotBeWritten) {
  EXPECT_TRUE(ProbeWritable(::testing::TempDir()).ok());
  const absl::Status missing = ProbeWritable("/nonexistent/carebroker");
  EXPECT_EQ(missing.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ReasonOf(missing), "STORE_UNAVAILABLE");
  EXPECT_THAT(std::string(missing.message()), ::testing::HasSubstr("/nonexistent/carebroker"));
}

}  // namespace
}  // namespace carebroker
