// The carebroker binary itself: a bad config stops it with a precise error;
// --listen and --data-dir override the file; SIGTERM stops it cleanly.
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

#include "absl/strings/str_cat.h"
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

  std::string binary_, pki_;
  fs::path dir_;
};

TEST_F(BinaryTest, BadConfigStopsWithFileLineAndKey) {
  const std::string path = WriteConfig(GoodConfig() + "  - {ods: X26, name: NHS England, kind: nhs_englnd}\n");
  EXPECT_EQ(Wait(Spawn({"--config", path})), 2);
  const std::string err = Stderr();
  EXPECT_NE(err.find("bad config"), std::string::npos) << err;
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
  std::string err;
  for (int i = 0; i < 200 && err.find("listening on") == std::string::npos; ++i) {
    ::usleep(50'000);
    err = Stderr();
  }
  ASSERT_NE(err.find("listening on 127.0.0.1:"), std::string::npos) << err;
  EXPECT_TRUE(fs::exists(data / "carebroker.db"));
  EXPECT_FALSE(fs::exists(dir_ / "from-file"));
  const std::string port = err.substr(err.find("127.0.0.1:") + 10, err.find(' ', err.find("127.0.0.1:")) -
                                                                        err.find("127.0.0.1:") - 10);
  auto ch = MakeChannel(ClientTls{"127.0.0.1:" + port, pki_ + "/RR8.crt", pki_ + "/RR8.key", pki_ + "/ca.crt"});
  ASSERT_TRUE(ch.ok());
  EXPECT_TRUE((*ch)->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)));
  ::kill(pid, SIGTERM);
  EXPECT_EQ(Wait(pid), 0);
  EXPECT_NE(Stderr().find("stopped"), std::string::npos);
}

}  // namespace
}  // namespace carebroker
