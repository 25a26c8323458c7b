// The PostgreSQL store's schema migrations and statement errors, against
// the real throwaway cluster (tests/pg.sh).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <thread>

#include <sstream>

#include "absl/strings/str_cat.h"
#include "broker/cli/ctl/ctl.h"
#include "broker/store/pg.h"
#include "broker/store/pg_schema.h"
#include "tests/pg/pg_testing.h"

namespace carebroker::pg {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::unique_ptr<Connection> Connect(const std::string& uri) {
  auto c = Connection::Open(uri);
  EXPECT_TRUE(c.ok()) << c.status();
  if (!c.ok()) std::abort();
  return *std::move(c);
}

TEST(PgSchema, MigratesAnEmptyDatabaseOnceAndThenHasNothingToDo) {
  auto conn = Connect(testing::FreshPgDatabase("migrate"));
  EXPECT_EQ(*CurrentVersion(*conn), 0);
  auto first = Migrate(*conn);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(*first, 0) << "found empty";
  EXPECT_EQ(*CurrentVersion(*conn), SchemaVersion());
  for (const char* table : {"messages", "bodies", "consent", "audit", "audit_next", "tree_heads"}) {
    auto r = conn->Exec("SELECT to_regclass($1) IS NOT NULL", {Param::Text(table)});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->Text(0, 0), "t") << table;
  }
  auto audit_next = conn->Exec("SELECT idx FROM audit_next");
  ASSERT_TRUE(audit_next.ok());
  ASSERT_EQ(audit_next->rows(), 1);
  EXPECT_EQ(audit_next->Int(0, 0), 0) << "the audit log starts at index 0";

  auto again = Migrate(*conn);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, SchemaVersion()) << "already current";
}

TEST(PgSchema, ReplicasStartingTogetherTakeTurns) {
  const std::string uri = testing::FreshPgDatabase("race");
  absl::StatusOr<int> found[4];
  std::vector<std::thread> threads;
  for (auto& f : found) {
    threads.emplace_back([&f, &uri] {
      auto c = Connect(uri);
      f = Migrate(*c);
    });
  }
  for (auto& t : threads) t.join();
  int migrated_from_empty = 0;
  for (const auto& f : found) {
    ASSERT_TRUE(f.ok()) << f.status();
    if (*f == 0) ++migrated_from_empty;
  }
  EXPECT_EQ(migrated_from_empty, 1) << "one replica migrated; the others found it done";
  auto conn = Connect(uri);
  EXPECT_EQ(*CurrentVersion(*conn), SchemaVersion());
}

TEST(PgSchema, ADatabaseFromANewerBuildIsRefusedAndLeftAlone) {
  auto conn = Connect(testing::FreshPgDatabase("newer"));
  ASSERT_TRUE(Migrate(*conn).ok());
  ASSERT_TRUE(conn->Exec("UPDATE carebroker_schema SET version = $1", {Param::Int(SchemaVersion() + 1)}).ok());
  auto r = Migrate(*conn);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("newer than this build"));
  EXPECT_EQ(*CurrentVersion(*conn), SchemaVersion() + 1) << "not rolled back";
}

TEST(PgErrors, AFailedStatementNamesItsCodeAndConstraintNeverTheValue) {
  auto conn = Connect(testing::FreshPgDatabase("errors"));
  ASSERT_TRUE(Migrate(*conn).ok());
  const std::string insert =
      "INSERT INTO consent (nhs_number, change) VALUES ($1, $2)";
  ASSERT_TRUE(conn->Exec(insert, {Param::Text("9990000018"), Param::Bytes(std::string("\0\1", 2))}).ok());
  ASSERT_TRUE(conn->ExecScript("CREATE UNIQUE INDEX consent_once ON consent (nhs_number)").ok());
  auto dup = conn->Exec(insert, {Param::Text("9990000018"), Param::Bytes("x")});
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(dup.status().message(), HasSubstr("23505"));
  EXPECT_THAT(dup.status().message(), HasSubstr("consent_once"));
  EXPECT_THAT(dup.status().message(), Not(HasSubstr("9990000018")));

  auto bad = conn->Exec("SELECT $1::bigint", {Param::Text("9990000018x")});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("22P02"));
  EXPECT_THAT(bad.status().message(), Not(HasSubstr("9990000018"))) << "a data error's message quotes the value";

  auto syntax = conn->Exec("SELEC 1");
  ASSERT_FALSE(syntax.ok());
  EXPECT_THAT(syntax.status().message(), HasSubstr("syntax error")) << "SQL, not data: the message helps";
}

TEST(PgErrors, BytesRoundTripAndNullsAreNull) {
  auto conn = Connect(testing::FreshPgDatabase("bytes"));
  const std::string all = [] {
    std::string s;
    for (int i = 0; i < 256; ++i) s.push_back(static_cast<char>(i));
    return s;
  }();
  auto r = conn->Exec("SELECT $1::bytea, $2::text, length($1::bytea)", {Param::Bytes(all), Param::Null()});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->Bytes(0, 0), all);
  EXPECT_TRUE(r->IsNull(0, 1));
  EXPECT_EQ(r->Int(0, 2), 256);
}

TEST(PgConnection, AnUnreachableServerIsUnavailable) {
  auto c = Connection::Open("postgresql://carebroker:secret-password@127.0.0.1:1/none?connect_timeout=5");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(c.status().message(), Not(HasSubstr("secret-password")));
}

int Ctl(std::vector<std::string> args, std::string* out, std::string* err) {
  args.insert(args.begin(), "carebrokerctl");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  std::ostringstream o, e;
  const int rc = RunCtl(static_cast<int>(argv.size()), argv.data(), o, e);
  *out = o.str();
  *err = e.str();
  return rc;
}

TEST(CtlDbMigrate, MigratesThenSaysCurrentAndReportsAnUnreachableServer) {
  const std::string uri = testing::FreshPgDatabase("ctl");
  std::string out, err;
  EXPECT_EQ(Ctl({"db", "migrate", "--store", uri}, &out, &err), 0) << err;
  EXPECT_THAT(out, HasSubstr(absl::StrCat("schema version 0 -> ", SchemaVersion())));
  EXPECT_EQ(Ctl({"db", "migrate", "--store", uri}, &out, &err), 0) << err;
  EXPECT_THAT(out, HasSubstr("current; nothing to do"));
  EXPECT_EQ(Ctl({"db", "migrate", "--store", "postgresql://carebroker@127.0.0.1:1/x?connect_timeout=5"}, &out, &err),
            1);
  EXPECT_THAT(err, HasSubstr("cannot connect"));
  EXPECT_EQ(Ctl({"db", "migrate", "--store", "/nonexistent/carebroker.db"}, &out, &err), 1);
  EXPECT_THAT(err, HasSubstr("no SQLite store"));
  EXPECT_EQ(Ctl({"db", "migrate"}, &out, &err), 2) << "--store is required";
}

TEST(PgConnection, VerifyFullWithTheServersCaIsEncryptedAndAnotherCaIsRefused) {
  const char* ca = std::getenv("CB_PG_CA");
  const char* pki = std::getenv("CB_TEST_PKI");
  ASSERT_TRUE(ca && pki) << "run through tests/run.sh (tests/pg.sh exports CB_PG_CA)";
  const std::string db = testing::FreshPgDatabase("tls");
  auto c = Connection::Open(db, {{"sslmode", "verify-full"}, {"sslrootcert", ca}});
  ASSERT_TRUE(c.ok()) << c.status();
  auto ssl = (*c)->Exec("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
  ASSERT_TRUE(ssl.ok()) << ssl.status();
  EXPECT_EQ(ssl->Text(0, 0), "t") << "the link is encrypted";

  // The dev PKI's CA did not sign the server's certificate.
  auto refused = Connection::Open(db, {{"sslmode", "verify-full"}, {"sslrootcert", std::string(pki) + "/ca.crt"}});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("certificate"));
}

TEST(PgConnection, StoreStringsAreToldApart) {
  EXPECT_TRUE(IsPostgresUri("postgresql://broker@db.example.nhs.uk/carebroker?sslmode=verify-full"));
  EXPECT_TRUE(IsPostgresUri("postgres://db/carebroker"));
  EXPECT_TRUE(IsPostgresUri("host=db.example.nhs.uk dbname=carebroker sslmode=verify-full"));
  EXPECT_FALSE(IsPostgresUri("var/data/carebroker.db"));
  EXPECT_FALSE(IsPostgresUri("/srv/carebroker/store.db"));
}

}  // namespace
}  // namespace carebroker::pg
