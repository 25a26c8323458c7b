#include "broker/mesh/headers.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/status.h"

namespace carebroker::mesh {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// 9434765919 and 4010232137 are synthetic NHS numbers with a right check digit.
TEST(MeshHeaders, NhsNumbersAreFoundAloneOrGrouped) {
  EXPECT_TRUE(HoldsPersonalData("Discharge for Jane, NHS Number: 9434765919, seen at RR8"));
  EXPECT_TRUE(HoldsPersonalData("943 476 5919"));
  EXPECT_TRUE(HoldsPersonalData("ref-401-023-2137"));
  EXPECT_FALSE(HoldsPersonalData("9434765918")) << "a wrong check digit is not an NHS number";
  EXPECT_FALSE(HoldsPersonalData("19434765919")) << "part of a longer run of digits";
  EXPECT_FALSE(HoldsPersonalData("94347659190"));
  EXPECT_FALSE(HoldsPersonalData("943  476 5919")) << "two spaces";
  EXPECT_FALSE(HoldsPersonalData("Discharge summary 06/12/2026")) << "a date that is not marked as a birth date";
  EXPECT_FALSE(HoldsPersonalData("LOCAL-20261206-0001"));
}

TEST(MeshHeaders, DatesOfBirthAreFoundAfterTheirMarker) {
  EXPECT_TRUE(HoldsPersonalData("Smith DOB 01/02/1950"));
  EXPECT_TRUE(HoldsPersonalData("d.o.b: 1950-02-01"));
  EXPECT_TRUE(HoldsPersonalData("born 1.2.1950"));
  EXPECT_TRUE(HoldsPersonalData("date of birth 19500201"));
  EXPECT_FALSE(HoldsPersonalData("DOB unknown, admitted 01/02/2026 at a ward far away from here"));
  EXPECT_FALSE(HoldsPersonalData("birthday card"));
}

TEST(MeshHeaders, AGoodSendPasses) {
  EXPECT_TRUE(CheckSendHeaders({{"mex-to", "503HC001"},
                                {"mex-workflowid", "TOC_FHIR_IP_DISCH"},
                                {"mex-subject", "Discharge summary"},
                                {"mex-localid", "PAS-000123"},
                                {"mex-filename", "discharge.json"},
                                {"content-type", "application/fhir+json"}})
                  .ok());
}

TEST(MeshHeaders, MalformedHeadersAreError06NamingThemNotTheirValues) {
  absl::Status s = CheckSendHeaders({{"mex-to", "https://evil.example/x"},
                                     {"mex-workflowid", "TOC\x01"},
                                     {"mex-localid", std::string(301, 'a')},
                                     {"mex-partnerid", "fine"},
                                     {"mex-content-checksum", " http://x"}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReasonOf(s), "MESH_HEADER_MALFORMED");
  EXPECT_THAT(std::string(s.message()), HasSubstr("mex-to, mex-workflowid, mex-localid, mex-content-checksum"));
  EXPECT_THAT(std::string(s.message()), Not(HasSubstr("evil")));
  // A URL is allowed where MESH allows one; an unknown mex- header still has a length limit.
  EXPECT_TRUE(CheckSendHeaders({{"mex-subject", "see https://example.org"}}).ok());
  EXPECT_EQ(ReasonOf(CheckSendHeaders({{"mex-unknownthing", std::string(501, 'x')}})), "MESH_HEADER_MALFORMED");
}

TEST(MeshHeaders, PersonalDataInSubjectLocalIdOrFileNameIsRefusedWithoutQuotingIt) {
  for (const char* header : {"mex-subject", "mex-localid", "mex-filename"}) {
    absl::Status s = CheckSendHeaders({{header, "Smith 9434765919"}});
    EXPECT_EQ(ReasonOf(s), "MESH_HEADER_PERSONAL_DATA") << header;
    EXPECT_THAT(std::string(s.message()), HasSubstr(header));
    EXPECT_THAT(std::string(s.message()), Not(HasSubstr("9434765919")));
    EXPECT_THAT(std::string(s.message()), Not(HasSubstr("Smith")));
  }
  // Not checked where MESH carries identifiers by design.
  EXPECT_TRUE(CheckSendHeaders({{"mex-partnerid", "9434765919"}}).ok());
}

}  // namespace
}  // namespace carebroker::mesh
