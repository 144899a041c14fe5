// One rank of the multi-process tests, started by the launcher (it reads
// MODAMBA_RANK, MODAMBA_WORLD_SIZE and MODAMBA_STORE). Exits 0 when its
// checks pass; prints what failed otherwise.
//
//   --mode=store        set/get/add/check/timeout across processes
//   --mode=collectives  every Gloo collective against exact values
//   --mode=flat_bucket  an FSDP gather / reduce-scatter round on flat buckets
//   --mode=kill         rank --victim dies by SIGKILL after a barrier; the
//                       others print "COLLECTIVE ERROR: ..." and exit 3
//   --mode=hang         the same, but the victim stops (SIGSTOP) instead
//   --mode=absent       rank --victim exits before the rendezvous
#include <signal.h>
#include <stdlib.h>

#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "rendezvous/open_store.h"
#include "trainer/collectives.h"
#include "trainer/collectives_checks.h"
#include "trainer/gloo_collectives.h"

ABSL_FLAG(std::string, mode, "collectives", "What to check; see the file comment.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(20), "Collectives timeout.");
ABSL_FLAG(int, victim, 1, "The rank that fails in the failure modes.");

namespace modamba {
namespace {

int EnvInt(const char* name) {
  const char* value = getenv(name);
  int n = -1;
  if (value == nullptr || !absl::SimpleAtoi(value, &n)) {
    fprintf(stderr, "%s is not set\n", name);
    exit(2);
  }
  return n;
}

int Fail(const absl::Status& status) {
  fprintf(stderr, "CHECK FAILED: %s\n", status.ToString().c_str());
  return 1;
}

absl::Status CheckStore(KvStore& store, int rank, int world) {
  const int next = (rank + 1) % world;
  if (auto s = store.Set(absl::StrCat("from/", rank), absl::StrCat("value-", rank)); !s.ok()) {
    return s;
  }
  absl::StatusOr<std::string> got = store.Get(absl::StrCat("from/", next), absl::Seconds(20));
  if (!got.ok()) return got.status();
  if (*got != absl::StrCat("value-", next)) {
    return absl::InternalError(absl::StrCat("from/", next, " holds '", *got, "'"));
  }
  for (int i = 0; i < 50; ++i) {
    if (absl::StatusOr<int64_t> v = store.Add("counter", 1); !v.ok()) return v.status();
  }
  const std::string missing = absl::StrCat("missing/", rank);
  absl::StatusOr<std::string> none = store.Get(missing, absl::Milliseconds(200));
  if (!absl::IsDeadlineExceeded(none.status()) ||
      !absl::StrContains(none.status().message(), missing)) {
    return absl::InternalError(absl::StrCat("Get of an unset key gave ", none.status().ToString()));
  }
  absl::StatusOr<bool> all =
      store.Check({absl::StrCat("from/", rank), absl::StrCat("from/", next)});
  if (!all.ok()) return all.status();
  absl::StatusOr<bool> some = store.Check({absl::StrCat("from/", rank), missing});
  if (!some.ok()) return some.status();
  if (!*all || *some) return absl::InternalError("Check disagrees with the keys set");
  return absl::OkStatus();
}

int Main() {
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const int rank = EnvInt("MODAMBA_RANK"), world = EnvInt("MODAMBA_WORLD_SIZE");
  const char* address = getenv("MODAMBA_STORE");
  absl::StatusOr<std::unique_ptr<KvStore>> store = OpenKvStore(address == nullptr ? "" : address);
  if (!store.ok()) return Fail(store.status());
  if (mode == "store") {
    const absl::Status s = CheckStore(**store, rank, world);
    return s.ok() ? 0 : Fail(s);
  }
  const int victim = absl::GetFlag(FLAGS_victim);
  if (mode == "absent" && rank == victim) return 0;

  GlooOptions options;
  options.group.rank = rank;
  options.group.world_size = world;
  options.group.timeout = absl::GetFlag(FLAGS_timeout);
  absl::StatusOr<std::unique_ptr<Collectives>> collectives =
      NewGlooCollectives(store->get(), options);
  if (!collectives.ok()) {
    fprintf(stderr, "COLLECTIVE ERROR: %s\n", collectives.status().ToString().c_str());
    return 3;
  }
  Collectives& c = **collectives;
  std::unique_ptr<TestMemory> memory = NewHostMemory();
  if (mode == "collectives" || mode == "flat_bucket") {
    absl::Status s = mode == "collectives"
                         ? CheckCollectives(c, *memory, {DType::kF32, DType::kF64})
                         : CheckFlatBuckets(c, *memory, DType::kF32);
    if (s.ok() && mode == "flat_bucket") s = CheckFlatBuckets(c, *memory, DType::kF64);
    if (!s.ok()) return Fail(s);
    fprintf(stderr, "rank %d: %s checks passed\n", rank, mode.c_str());
    return 0;
  }
  if (mode != "kill" && mode != "hang") return Fail(absl::InvalidArgumentError("unknown --mode"));
  std::vector<float> data(4096, 1.0f);
  const BufferView buffer{data.data(), DType::kF32, Device::kCpu, 4096};
  for (int i = 0; i < 3; ++i) {
    if (absl::Status s = c.AllReduce(buffer); !s.ok()) return Fail(s);
  }
  if (absl::Status s = c.Barrier(); !s.ok()) return Fail(s);
  if (rank == victim) raise(mode == "kill" ? SIGKILL : SIGSTOP);
  // The survivors carry on until the loss surfaces, which it must.
  for (int i = 0; i < 100000; ++i) {
    if (absl::Status s = c.AllReduce(buffer); !s.ok()) {
      fprintf(stderr, "COLLECTIVE ERROR: %s\n", s.ToString().c_str());
      return 3;
    }
  }
  fprintf(stderr, "no error after the victim's loss\n");
  return 4;
}

}  // namespace
}  // namespace modamba

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  return modamba::Main();
}
