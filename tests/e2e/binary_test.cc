// The carebroker binary itself: a bad config stops it with a precise error;
// --listen and --data-dir override the file; SIGHUP reloads the file (a bad
// one is refused and the broker serves on); SIGTERM stops it cleanly. Its
// log is JSON lines on stderr.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "broker/client/client.h"

extern char** environ;

namespace carebroker {
namespace {

namespace fs = std::filesystem;

class BinaryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* bin = std::getenv("CB_BINARY_DIR");
    const char* pki = std::getenv("CB_TEST_PKI");
    ASSERT_TRUE(bin && pki) << "run through ctest";
    binary_ = (fs::path(bin) / "broker/carebroker").string();
    pki_ = pki;
    dir_ = fs::temp_directory_path() / absl::StrCat("cb-binary-", ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string WriteConfig(const std::string& body) {
    const std::string path = (dir_ / "carebroker.yaml").string();
    std::ofstream(path) << body;
    return path;
  }
  std::string GoodConfig() {
    return absl::StrCat("listen: 127.0.0.1:1\nmetrics: {listen: \"127.0.0.1:0\"}\ndata_dir: ", (dir_ / "from-file").string(), "\ntls:\n  cert: ", pki_,
                        "/server.crt\n  key: ", pki_, "/server.key\n  ca: ", pki_, "/ca.crt\n  crl: ", pki_,
                        "/crl.pem\naudit: {signing_key: ", pki_, "/audit-signing.key, subject_key: ", pki_,
                        "/audit-subject.key}\npolicy: {agreements_dir: ", std::getenv("CB_SOURCE_DIR"),
                        "/tests/agreements}\norganisations:\n  - {ods: RR8, name: Leeds, kind: nhs_trust}\n");
  }

  pid_t Spawn(std::vector<std::string> args) {
    const std::string log = (dir_ / "stderr.txt").string();
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    args.insert(args.begin(), binary_);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    EXPECT_EQ(posix_spawn(&pid, binary_.c_str(), &fa, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    return pid;
  }
  int Wait(pid_t pid) {
    int st = 0;
    ::waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  std::string Stderr() {
    std::ifstream in(dir_ / "stderr.txt");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  // The log lines so far, each one JSON object (a test failure otherwise).
  std::vector<nlohmann::json> Lines() {
    std::vector<nlohmann::json> out;
    for (absl::string_view line : absl::StrSplit(Stderr(), '\n', absl::SkipEmpty())) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      EXPECT_TRUE(j.is_object()) << line;
      out.push_back(std::move(j));
    }
    return out;
  }
  // The first line of `event`, waiting up to 10 s for it; null when none.
  nlohmann::json Await(const std::string& event, size_t nth = 1) {
    for (int i = 0; i < 200; ++i) {
      size_t seen = 0;
      for (auto& j : Lines()) {
        if (j.value("event", "") == event && ++seen == nth) return j;
      }
      ::usleep(50'000);
    }
    return nullptr;
  }

  std::string binary_, pki_;
  fs::path dir_;
};

TEST_F(BinaryTest, BadConfigStopsWithFileLineAndKey) {
  const std::string path = WriteConfig(GoodConfig() + "  - {ods: X26, name: NHS England, kind: nhs_englnd}\n");
  EXPECT_EQ(Wait(Spawn({"--config", path})), 2);
  const std::string err = Stderr();
  EXPECT_NE(err.find("\"level\":\"error\",\"program\":\"carebroker\",\"event\":\"config.invalid\""),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("carebroker.yaml:13: organisations[1].kind: 'nhs_englnd' is not one of"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir_ / "from-file")) << "nothing may be created from a bad config";
}

TEST_F(BinaryTest, MissingConfigAndUsageErrors) {
  EXPECT_EQ(Wait(Spawn({"--config", (dir_ / "absent.yaml").string()})), 2);
  EXPECT_NE(Stderr().find("cannot read the config file"), std::string::npos);
  EXPECT_NE(Wait(Spawn({})), 0);  // --config is required
}

TEST_F(BinaryTest, FlagsOverrideTheFileAndSigtermStopsCleanly) {
  const std::string path = WriteConfig(GoodConfig());
  const fs::path data = dir_ / "from-flag";
  pid_t pid = Spawn({"--config", path, "--listen", "127.0.0.1:0", "--data-dir", data.string()});
  // The broker logs its bound address; wait for it (bounded).
  const nlohmann::json started = Await("broker.started");
  ASSERT_TRUE(started.is_object()) << Stderr();
  const std::string listen = started.value("listen", "");
  ASSERT_EQ(listen.rfind("127.0.0.1:", 0), 0u) << started;
  EXPECT_NE(started.value("message", "").find("listening on " + listen), std::string::npos);
  EXPECT_TRUE(fs::exists(data / "carebroker.db"));
  EXPECT_FALSE(fs::exists(dir_ / "from-file"));
  auto ch = MakeChannel(ClientTls{listen, pki_ + "/RR8.crt", pki_ + "/RR8.key", pki_ + "/ca.crt"});
  ASSERT_TRUE(ch.ok());
  EXPECT_TRUE((*ch)->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)));

  // SIGHUP reads the file again (the flags still win over it).
  WriteConfig(GoodConfig() + "  - {ods: \"503\", name: Lincolnshire County Council, kind: local_authority}\n");
  ::kill(pid, SIGHUP);
  const nlohmann::json reloaded = Await("config.reloaded");
  ASSERT_TRUE(reloaded.is_object()) << Stderr();
  EXPECT_EQ(reloaded.value("organisations", 0), 2);
  EXPECT_EQ(reloaded.value("actor", ""), "SIGHUP");
  // A bad file is refused, named, and the broker serves on.
  WriteConfig(GoodConfig() + "  - {ods: X26, name: NHS England, kind: nhs_englnd}\n");
  ::kill(pid, SIGHUP);
  const nlohmann::json refused = Await("config.reload_refused");
  ASSERT_TRUE(refused.is_object()) << Stderr();
  EXPECT_NE(refused.value("message", "").find("carebroker.yaml:13: organisations[1].kind"), std::string::npos)
      << refused;
  auto again = MakeChannel(ClientTls{listen, pki_ + "/503.crt", pki_ + "/503.key", pki_ + "/ca.crt"});
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE((*again)->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)));

  ::kill(pid, SIGTERM);
  EXPECT_EQ(Wait(pid), 0);
  EXPECT_TRUE(Await("broker.stopped").is_object()) << Stderr();
}

}  // namespace
}  // namespace carebroker
