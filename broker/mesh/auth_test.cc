#include "broker/mesh/auth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "core/status.h"

namespace carebroker::mesh {
namespace {

constexpr char kSecret[] = "BackBone";
constexpr char kMailbox[] = "RR8HC001";
constexpr char kPassword[] = "Sup3rSecretPassw0rd";
constexpr char kNonce[] = "7e1d5c3a-5a8b-4f7e-9c61-0a1b2c3d4e5f";

absl::Time At(const std::string& yyyymmddhhmm) {
  auto f = [&](size_t at, size_t n) { return std::stoi(yyyymmddhhmm.substr(at, n)); };
  return absl::FromCivil(absl::CivilMinute(f(0, 4), f(4, 2), f(6, 2), f(8, 2), f(10, 2)), absl::UTCTimeZone());
}

std::string TokenFor(const std::string& count, const std::string& ts, const std::string& mailbox = kMailbox,
                     const std::string& password = kPassword, const std::string& secret = kSecret) {
  return absl::StrCat("NHSMESH ", mailbox, ":", kNonce, ":", count, ":", ts, ":",
                      TokenHmac(secret, mailbox, kNonce, count, password, ts));
}

TEST(MeshToken, TheHmacIsTheOneOpenSslComputes) {
  // printf '%s' 'RR8HC001:7e1d...:1:Sup3rSecretPassw0rd:202612061900' | openssl dgst -sha256 -hmac BackBone
  EXPECT_EQ(TokenHmac(kSecret, kMailbox, kNonce, "1", kPassword, "202612061900"),
            "6e6566f8245b7b0369a9b66a34514af60b924b17cc17f5108fbf2244bd6cf5fe");
}

TEST(MeshToken, ParsesTheFiveFields) {
  auto t = ParseToken(TokenFor("12", "202612061900"));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->mailbox, kMailbox);
  EXPECT_EQ(t->nonce, kNonce);
  EXPECT_EQ(t->nonce_count, "12");
  EXPECT_EQ(t->time, At("202612061900"));
}

TEST(MeshToken, MalformedTokensAreRefusedWithoutQuotingThem) {
  const std::string good = TokenFor("1", "202612061900");
  for (const std::string& bad : {std::string(""), std::string("Basic abc"), std::string("NHSMESH a:b:c:d"),
                                 good.substr(8), absl::StrCat(good, ":extra"),
                                 absl::StrCat("NHSMESH RR8HC001:", kNonce, ":x:202612061900:", std::string(64, 'a')),
                                 absl::StrCat("NHSMESH RR8HC001:", kNonce, ":1:20261206190:", std::string(64, 'a')),
                                 absl::StrCat("NHSMESH RR8HC001:", kNonce, ":1:202613061900:", std::string(64, 'a')),
                                 absl::StrCat("NHSMESH RR8HC001:", kNonce, ":1:202612061900:", std::string(63, 'a')),
                                 absl::StrCat("NHSMESH RR8 HC1:", kNonce, ":1:202612061900:", std::string(64, 'a'))}) {
    auto t = ParseToken(bad);
    ASSERT_FALSE(t.ok()) << bad;
    EXPECT_EQ(ReasonOf(t.status()), "MESH_TOKEN_INVALID") << bad;
    EXPECT_THAT(std::string(t.status().message()), ::testing::Not(::testing::HasSubstr(kNonce)));
  }
}

absl::Status Check(const std::string& token, absl::Time now) {
  return CheckToken(token, kMailbox, kSecret, kPassword, now).status();
}

TEST(MeshTokenCheck, AGoodTokenPassesAndNamesItselfByMailboxAndHash) {
  const absl::Time now = At("202612061930");
  const std::string token = TokenFor("1", "202612061900");
  auto ok = CheckToken(token, kMailbox, kSecret, kPassword, now);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->key, absl::StrCat(kMailbox, ":", token.substr(token.rfind(':') + 1)));
  // Remembered until it would be stale anyway.
  EXPECT_EQ(ok->forget_at, At("202612062100"));
  // The next count makes another token; hex in upper case is the same hash.
  EXPECT_NE(CheckToken(TokenFor("2", "202612061900"), kMailbox, kSecret, kPassword, now)->key, ok->key);
  std::string upper = token;
  for (size_t i = upper.rfind(':') + 1; i < upper.size(); ++i) upper[i] = absl::ascii_toupper(upper[i]);
  EXPECT_EQ(CheckToken(upper, kMailbox, kSecret, kPassword, now)->key, ok->key);
  EXPECT_EQ(ReasonOf(TokenReused()), "MESH_TOKEN_REUSED");
  EXPECT_EQ(TokenReused().code(), absl::StatusCode::kPermissionDenied);
}

TEST(MeshTokenCheck, AWrongPasswordSecretOrMailboxIsRefused) {
  const absl::Time now = At("202612061900");
  EXPECT_EQ(ReasonOf(Check(TokenFor("1", "202612061900", kMailbox, "wrong"), now)), "MESH_TOKEN_INVALID");
  EXPECT_EQ(ReasonOf(Check(TokenFor("1", "202612061900", kMailbox, kPassword, "other"), now)), "MESH_TOKEN_INVALID");
  EXPECT_EQ(ReasonOf(Check(TokenFor("1", "202612061900", "RR8HC002"), now)), "MESH_MAILBOX_MISMATCH");
  EXPECT_TRUE(Check(TokenFor("1", "202612061900"), now).ok());
}

TEST(MeshTokenCheck, OnlyWithinTwoHoursOfTheClockEitherWay) {
  const absl::Time now = At("202612061900");
  EXPECT_TRUE(Check(TokenFor("1", "202612061700"), now).ok());
  EXPECT_TRUE(Check(TokenFor("1", "202612062100"), now).ok());
  EXPECT_EQ(ReasonOf(Check(TokenFor("1", "202612061659"), now)), "MESH_TOKEN_STALE");
  EXPECT_EQ(ReasonOf(Check(TokenFor("1", "202612062101"), now)), "MESH_TOKEN_STALE");
}

}  // namespace
}  // namespace carebroker::mesh
