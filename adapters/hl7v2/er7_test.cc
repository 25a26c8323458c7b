#include "adapters/hl7v2/er7.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/escaping.h"
#include "core/status.h"

namespace carebroker::hl7 {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// A synthetic ITK-style A03 (no real person), segments joined by `eol`.
std::string A03(absl::string_view eol = "\r", absl::string_view charset = "", absl::string_view name = "SMITH") {
  return absl::StrCat("MSH|^~\\&|PAS|RR8|CAREBROKER|503|20261122101500||ADT^A03^ADT_A03|MSG00001|P|2.4|||||GBR|",
                      charset, "|EN||ITKv1.0", eol,
                      "EVN|A03|20261122101500", eol,
                      "PID|||9434765919^^^NHS^NH~RR8123456^^^RR8^MR||", name,
                      "^JANE^^^MRS^^L||19470301|2|||1 HIGH ST^^LEEDS^^LS1 4AP^GBR^H", eol,
                      "PV1||I|WARD7^^^RR813|21||||C1234^JONES^ANNE|||||||||||V0001|||||||||||||||||19|54||||||",
                      "|20261115090000|20261122100000", eol,
                      "ZU1|||||||||1", eol);
}

Message Parsed(const std::string& er7) {
  auto m = Message::Parse(er7);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) std::abort();
  return *std::move(m);
}

TEST(Er7, ReadsSegmentsFieldsRepetitionsComponents) {
  const Message m = Parsed(A03());
  ASSERT_EQ(m.segments().size(), 5u);
  const Segment& msh = m.msh();
  EXPECT_EQ(msh.Get(1), "|");
  EXPECT_EQ(msh.Get(2), "^~\\&");
  EXPECT_EQ(msh.Get(4), "RR8");
  EXPECT_EQ(msh.Get(9, 1), "ADT");
  EXPECT_EQ(msh.Get(9, 2), "A03");
  EXPECT_EQ(msh.Get(9, 3), "ADT_A03");
  EXPECT_EQ(msh.Get(10), "MSG00001");
  EXPECT_EQ(msh.Get(21), "ITKv1.0");
  const Segment* pid = m.Find("PID");
  ASSERT_NE(pid, nullptr);
  EXPECT_EQ(pid->Repetitions(3), 2);
  EXPECT_EQ(pid->Get(3, 1, 1, 0), "9434765919");
  EXPECT_EQ(pid->Get(3, 4, 1, 0), "NHS");
  EXPECT_EQ(pid->Get(3, 5, 1, 0), "NH");
  EXPECT_EQ(pid->Get(3, 1, 1, 1), "RR8123456");
  EXPECT_EQ(pid->Get(3, 5, 1, 1), "MR");
  EXPECT_EQ(pid->Get(3, 1, 1, 2), "") << "no third repetition";
  EXPECT_EQ(pid->Get(5, 2), "JANE");
  EXPECT_EQ(pid->Get(11, 5), "LS1 4AP");
  EXPECT_EQ(pid->Get(99), "");
  EXPECT_FALSE(pid->Has(2));
  const Segment* pv1 = m.Find("PV1");
  EXPECT_EQ(pv1->Get(3, 4), "RR813");
  EXPECT_EQ(pv1->Get(36), "19");
  EXPECT_EQ(pv1->Get(37), "54");
  EXPECT_EQ(pv1->Get(45), "20261122100000");
  EXPECT_EQ(m.FindAll("ZU1").size(), 1u) << "Z-segments are kept";
}

TEST(Er7, EveryPieceOfAFieldAndNothingBeyond) {
  const Message m = Parsed("MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.4\rZZ1|a&b^c~d^e&f&g||^\r");
  const Segment& z = m.segments()[1];
  const struct {
    int component, sub, rep;
    const char* want;
  } cases[] = {
      {1, 1, 0, "a"}, {1, 2, 0, "b"}, {1, 3, 0, ""}, {2, 1, 0, "c"}, {2, 2, 0, ""}, {3, 1, 0, ""},
      {1, 1, 1, "d"}, {2, 1, 1, "e"}, {2, 2, 1, "f"}, {2, 3, 1, "g"}, {2, 4, 1, ""}, {1, 1, 2, ""},
      {0, 1, 0, ""},  {1, 0, 0, ""},  {1, 1, -1, ""},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(z.Get(1, c.component, c.sub, c.rep), c.want) << c.component << "." << c.sub << " rep " << c.rep;
  }
  EXPECT_EQ(z.Repetitions(1), 2);
  EXPECT_EQ(z.Get(2), "") << "an empty field";
  EXPECT_EQ(z.Get(3, 1), "");
  EXPECT_EQ(z.Get(3, 2), "");
  EXPECT_FALSE(z.Has(4));
}

TEST(Er7, EveryLineEndingReadsTheSame) {
  for (absl::string_view eol : {"\n", "\r\n", "\n\r"}) {
    const Message m = Parsed(A03(eol));
    EXPECT_EQ(m.segments().size(), 5u) << absl::CEscape(eol);
    EXPECT_EQ(m.Find("PV1")->Get(37), "54");
  }
}

TEST(Er7, DelimitersComeFromTheMessage) {
  const Message m = Parsed("MSH#*!%@#PAS#RR8###20261122##ADT*A03#1#P#2.4\rPID###9434765919*@@@NHS!123**X\r");
  EXPECT_EQ(m.encoding().field, '#');
  EXPECT_EQ(m.encoding().component, '*');
  EXPECT_EQ(m.encoding().repetition, '!');
  EXPECT_EQ(m.encoding().escape, '%');
  EXPECT_EQ(m.encoding().subcomponent, '@');
  EXPECT_EQ(m.msh().Get(9, 2), "A03");
  const Segment* pid = m.Find("PID");
  EXPECT_EQ(pid->Get(3, 2, 4), "NHS");
  EXPECT_EQ(pid->Get(3, 3, 1, 1), "X");
}

TEST(Er7, ResolvesEveryEscape) {
  const Message m = Parsed(
      "MSH|^~\\&|A|B|C|D|1||ADT^A08|1|P|2.4\r"
      "NTE|1||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f|line one\\.br\\line two|\\H\\bold\\N\\|\\X414243\\|\\.sp\\x\\.in+2\\\r");
  const Segment* nte = m.Find("NTE");
  EXPECT_EQ(nte->Get(3), "a|b^c&d~e\\f");
  EXPECT_EQ(nte->Get(4), "line one\nline two");
  EXPECT_EQ(nte->Get(5), "bold");
  EXPECT_EQ(nte->Get(6), "ABC");
  EXPECT_EQ(nte->Get(7), "\nx");
  // An escaped delimiter does not split.
  EXPECT_EQ(nte->Get(3, 2), "");
}

TEST(Er7, EscapeReadsBackAsItself) {
  const std::string value = "O'Brien | \"Rose\" ^ & ~ \\ \nsecond line\r";
  const Message m = Parsed(absl::StrCat("MSH|^~\\&|A|B|C|D|1||ADT^A08|1|P|2.4\rNTE|1||", Escape(value, Encoding{}), "\r"));
  EXPECT_EQ(m.Find("NTE")->Get(3), value);
}

TEST(Er7, ConvertsDeclaredCharactersetsToUtf8) {
  // 8859/1: e-acute is the single byte E9, and \XE9\ is the same character.
  const Message latin = Parsed(A03("\r", "8859/1", "REN\xE9\\XE9\\"));
  EXPECT_EQ(latin.encoding().charset, Charset::kLatin1);
  EXPECT_EQ(latin.Find("PID")->Get(5), "REN\xC3\xA9\xC3\xA9");
  const Message utf8 = Parsed(A03("\r", "UNICODE UTF-8", "REN\xC3\xA9\\XC3A9\\"));
  EXPECT_EQ(utf8.encoding().charset, Charset::kUtf8);
  EXPECT_EQ(utf8.Find("PID")->Get(5), "REN\xC3\xA9\xC3\xA9");
  EXPECT_EQ(Parsed(A03("\r", "ASCII")).encoding().charset, Charset::kAscii);
}

TEST(Er7, RefusesTextThatBreaksItsDeclaredCharacterSet) {
  auto ascii = Message::Parse(A03("\r", "", "REN\xC9"));
  EXPECT_EQ(ReasonOf(ascii.status()), "HL7_INVALID");
  EXPECT_THAT(ascii.status().message(), HasSubstr("is not ASCII"));
  EXPECT_THAT(Message::Parse(A03("\r", "UNICODE UTF-8", "REN\xC9Z")).status().message(), HasSubstr("not valid UTF-8"));
  EXPECT_THAT(Message::Parse(A03("\r", "UNICODE UTF-8", "\\XC3\\")).status().message(), HasSubstr("not valid UTF-8"));
  EXPECT_THAT(Message::Parse(A03("\r", "ISO IR87")).status().message(),
              HasSubstr("MSH-18: character set \"ISO IR87\" is not supported"));
}

TEST(Er7, NamesEachMalformationWithoutQuotingData) {
  struct Case {
    std::string er7;
    std::string says;
  };
  const std::string msh = "MSH|^~\\&|A|B|C|D|1||ADT^A08|1|P|2.4\r";
  for (const Case& c : std::vector<Case>{
           {"", "does not start with an MSH segment"},
           {"PID|||9434765919\r", "does not start with an MSH segment"},
           {"MSH|^~|A|B\r", "MSH-2: the encoding characters must be 4"},
           {"MSH|^^\\&|A|B|C\r", "five distinct printable punctuation"},
           {"MSH|^~A&|A|B|C\r", "five distinct printable punctuation"},
           {msh + "PID|||SMITH\\F", "segment 2 (PID) field 3: an escape sequence is not terminated"},
           {msh + "PID|||SMITH\\Q\\", "segment 2 (PID) field 3: an unknown escape sequence"},
           {msh + "PID|||\\XZZ\\SMITH", "not hex"},
           {msh + "PID|||\\C2842\\SMITH", "character set switching"},
           {msh + "pid|||SMITH", "segment 2: does not start with a three-character segment id"},
           {msh + "PIDX|SMITH", "segment 2: does not start with a three-character segment id"},
           {msh + msh, "segment 2 (MSH) a second MSH"},
       }) {
    auto m = Message::Parse(c.er7);
    ASSERT_FALSE(m.ok()) << absl::CEscape(c.er7);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(m.status().message(), HasSubstr(c.says)) << absl::CEscape(c.er7);
    EXPECT_THAT(m.status().message(), Not(HasSubstr("SMITH"))) << "no data in errors";
  }
}

TEST(Er7, EnforcesLimits) {
  Limits small;
  small.max_bytes = 100;
  EXPECT_THAT(Message::Parse(A03(), small).status().message(), HasSubstr("the limit is 100"));
  small = Limits{};
  small.max_segments = 3;
  EXPECT_THAT(Message::Parse(A03(), small).status().message(), HasSubstr("more than 3 segments"));
  small = Limits{};
  small.max_fields = 20;
  EXPECT_THAT(Message::Parse(A03(), small).status().message(), HasSubstr("segment 4 (PV1) has more than 20 fields"));
}

TEST(Er7, AByteOrderMarkIsSkippedAndMovesKeepViewsValid) {
  std::vector<Message> many;
  for (int i = 0; i < 20; ++i) many.push_back(Parsed(absl::StrCat("\xEF\xBB\xBF", A03())));
  for (const Message& m : many) EXPECT_EQ(m.Find("PID")->Get(3), "9434765919");
}

}  // namespace
}  // namespace carebroker::hl7
