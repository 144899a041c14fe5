// The coordinator launching real trainers through a real Slurm: munged,
// slurmctld and three slurmd, each a fake node of this host (slurmd -N), all
// on loopback, started by the test. A 2-node x 2-rank CPU job (Gloo across
// the "nodes") ends at the same loss as under the local launcher, bit for
// bit; a job step cancelled with scancel, a node set DOWN and the whole
// allocation cancelled mid-run each end with the job finishing from its
// newest checkpoint; a coordinator killed and restarted adopts the running
// steps; a job waits in Slurm's queue past the register timeout; Slurm's
// refusals reach the user in its own words.
//
// Needs Debian's slurm-wlm and munge (tools/setup.sh installs them) and root,
// as slurmd does; without them every test is skipped and says why.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <iostream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "gtest/gtest.h"
#include "tests/cluster.h"
#include "tools/cli/client_command.h"
#include "trainer/synthetic_dataset.h"

namespace modamba {
namespace {

// Runs a shell command; its output (stdout and stderr), or an error with it.
absl::StatusOr<std::string> Sh(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return absl::InternalError("popen: " + command);
  std::string out;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof(buffer), pipe)) > 0;) out.append(buffer, n);
  const int status = pclose(pipe);
  if (status != 0) return absl::InternalError(absl::StrCat(command, " failed: ", out));
  return out;
}

// A free TCP port on loopback (the OS picks; it is free again once closed).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  close(fd);
  return port;
}

// Why Slurm cannot run here, or "" when it can.
std::string SlurmMissing() {
  for (const char* program : {"munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue"}) {
    if (!Sh(absl::StrCat("command -v ", program)).ok()) {
      return absl::StrCat(program,
                          " is not installed: tools/setup.sh installs slurm-wlm and munge");
    }
  }
  if (geteuid() != 0) return "slurmd must run as root: run the test as root";
  return "";
}

// munged, slurmctld and one slurmd per fake node, in a fresh directory
// (short, under /tmp: munge's socket path has a length limit).
class SlurmDaemons {
 public:
  static absl::StatusOr<std::unique_ptr<SlurmDaemons>> Start(int nodes) {
    std::unique_ptr<SlurmDaemons> daemons(new SlurmDaemons());
    char dir[] = "/tmp/modamba-slurm-XXXXXX";
    if (mkdtemp(dir) == nullptr) return absl::InternalError("mkdtemp");
    daemons->dir_ = dir;
    const std::string& d = daemons->dir_;
    chmod(d.c_str(), 0755);  // munge's socket must be reachable
    RETURN_IF_ERROR(Sh(absl::StrCat("mkdir -p ", d,
                                    "/state && head -c 1024 "
                                    "/dev/urandom > ",
                                    d, "/munge.key && chmod 400 ", d, "/munge.key"))
                        .status());
    RETURN_IF_ERROR(Sh(absl::StrCat("munged --force --socket=", d, "/munge.socket --key-file=", d,
                                    "/munge.key --log-file=", d, "/munged.log --pid-file=", d,
                                    "/munged.pid --seed-file=", d, "/munged.seed"))
                        .status());
    daemons->pid_files_.push_back(d + "/munged.pid");
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    std::string conf = absl::StrCat(
        "ClusterName=modamba-test\nSlurmctldHost=localhost(127.0.0.1)\n",
        "SlurmctldPort=", FreePort(), "\nAuthType=auth/munge\nAuthInfo=socket=", d,
        "/munge.socket\nCredType=cred/munge\nSlurmUser=root\nSlurmdUser=root\n",
        "StateSaveLocation=", d, "/state\nSlurmdSpoolDir=", d, "/spool/%n\n",
        "SlurmctldPidFile=", d, "/slurmctld.pid\nSlurmdPidFile=", d, "/slurmd-%n.pid\n",
        "SlurmctldLogFile=", d, "/slurmctld.log\nSlurmdLogFile=", d, "/slurmd-%n.log\n",
        "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
        "JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n"
        "JobCompType=jobcomp/none\nSchedulerType=sched/builtin\nSelectType=select/cons_tres\n"
        "SelectTypeParameters=CR_Core\nSlurmdParameters=config_overrides\nReturnToService=2\n"
        "MpiDefault=none\nSlurmdTimeout=30\nInactiveLimit=0\nKillWait=5\nMinJobAge=600\n"
        // Refuse at submission what the partition can never give; two fake GPUs a node.
        "EnforcePartLimits=ALL\nGresTypes=gpu\n");
    RETURN_IF_ERROR(WriteFileAtomic(d + "/gres.conf", "Name=gpu File=/dev/zero,/dev/full\n"));
    std::vector<std::string> names;
    for (int i = 1; i <= nodes; ++i) {
      names.push_back(absl::StrCat("node", i));
      RETURN_IF_ERROR(MakeDirs(absl::StrCat(d, "/spool/node", i)));
      absl::StrAppend(&conf, "NodeName=node", i, " NodeHostname=", host,
                      " NodeAddr=127.0.0.1 Port=", FreePort(),
                      " CPUs=4 RealMemory=4000 Gres=gpu:2 State=UNKNOWN\n");
    }
    absl::StrAppend(&conf, "PartitionName=main Nodes=node[1-", nodes,
                    "] Default=YES MaxTime=INFINITE State=UP\n");
    daemons->conf_ = d + "/slurm.conf";
    RETURN_IF_ERROR(WriteFileAtomic(daemons->conf_, conf));
    setenv("SLURM_CONF", daemons->conf_.c_str(), 1);  // for every Slurm command from here on
    RETURN_IF_ERROR(Sh("slurmctld -i").status());
    daemons->pid_files_.push_back(d + "/slurmctld.pid");
    for (const std::string& name : names) {
      RETURN_IF_ERROR(Sh("slurmd -N " + name).status());
      daemons->pid_files_.push_back(absl::StrCat(d, "/slurmd-", name, ".pid"));
    }
    // Up once every node is idle.
    const absl::Time give_up = absl::Now() + absl::Seconds(60);
    for (;;) {
      auto idle = Sh("sinfo --noheader --states=idle --format=%D");
      int count = 0;
      if (idle.ok() && absl::SimpleAtoi(absl::StripAsciiWhitespace(*idle), &count) &&
          count == nodes) {
        return daemons;
      }
      if (absl::Now() > give_up) {
        return absl::DeadlineExceededError(
            absl::StrCat("Slurm's nodes did not come up: ", Sh("sinfo").value_or("(sinfo failed)"),
                         ReadFile(d + "/slurmctld.log").value_or("")));
      }
      absl::SleepFor(absl::Milliseconds(200));
    }
  }

  // Cancels every Slurm job, brings DOWN nodes back and waits (a while)
  // until the nodes are free.
  static void CancelAll() {
    (void)Sh("scancel --full --user=root");
    const std::string down(
        absl::StripAsciiWhitespace(Sh("sinfo --noheader --states=down --format=%N").value_or("")));
    if (!down.empty()) (void)Sh("scontrol update NodeName=" + down + " State=RESUME");
    for (int i = 0;
         i < 100 && !absl::StripAsciiWhitespace(
                         Sh("squeue --noheader --states=PENDING,RUNNING,COMPLETING").value_or(""))
                         .empty();
         ++i) {
      absl::SleepFor(absl::Milliseconds(100));
    }
  }

  // Cancels every job, then stops the daemons this test started (by pid).
  ~SlurmDaemons() {
    CancelAll();
    for (auto it = pid_files_.rbegin(); it != pid_files_.rend(); ++it) {
      int pid = 0;
      auto text = ReadFile(*it);
      if (!text.ok() || !absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &pid) || pid <= 0) {
        continue;
      }
      kill(pid, SIGTERM);
      for (int i = 0; i < 100 && kill(pid, 0) == 0; ++i) absl::SleepFor(absl::Milliseconds(50));
      kill(pid, SIGKILL);
    }
    (void)Sh("rm -rf " + dir_);
  }

  std::string Logs() const { return Sh(absl::StrCat("tail -n 30 ", dir_, "/*.log")).value_or(""); }

 private:
  SlurmDaemons() = default;
  std::string dir_, conf_;
  std::vector<std::string> pid_files_;
};

// Four trainer ranks; on Slurm two nodes of two ranks, two CPUs each.
std::string Spec(const std::string& name,
                 const std::string& cluster = "cluster { nodes: 2 cpus_per_task: 2 }",
                 int evaluators = 0) {
  return absl::StrCat("n_evaluators: ", evaluators, R"pb(
                        world_size: 4
                        dataset_dir: "tri"
                        checkpoint_every_steps: 10
                        max_restarts: 2
                        train {
                          model {
                            d_model: 16
                            n_layer: 2
                            vocab_size: 1031
                            d_state: 4
                            n_modalities: 3
                            route_in: true
                            route_x: true
                            route_dt: true
                            route_out: true
                          }
                          optimizer { lr: 3e-3 warmup_steps: 3 }
                          steps: 40
                          batch_size: 4
                          seq_len: 48
                          seed: 3
                          eval_every: 10
                          eval_batches: 1
                        }
                      )pb",
                      cluster, "\nname: \"", name, "\"\n");
}

// `slurm_prefix`: the coordinator launches through Slurm, naming its jobs so.
ClusterOptions Options(const std::string& slurm_prefix) {
  ClusterOptions options;
  options.trainer_binary = "trainer/modamba-trainer";
  options.evaluator_binary = "evaluator/modamba-evaluator";
  options.heartbeat_timeout = absl::Seconds(10);
  if (!slurm_prefix.empty()) {
    options.gpus = 8;  // so that GPU jobs reach Slurm, which judges them
    options.extra_flags = {"--launcher=slurm", "--slurm_job_prefix=" + slurm_prefix};
  }
  return options;
}

absl::StatusOr<std::unique_ptr<Cluster>> StartCluster(const std::string& slurm_prefix) {
  auto cluster = Cluster::Start(Options(slurm_prefix));
  if (!cluster.ok()) return cluster.status();
  RETURN_IF_ERROR(WriteSyntheticDataset((*cluster)->data_root() + "/tri", "trimodal", 48, 64, 8));
  return cluster;
}

class SlurmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    missing_ = SlurmMissing();
    if (!missing_.empty()) return;
    auto daemons = SlurmDaemons::Start(3);
    if (!daemons.ok()) {
      start_error_ = daemons.status().ToString();
      return;
    }
    daemons_ = std::move(*daemons);
  }
  static void TearDownTestSuite() { daemons_.reset(); }

  void SetUp() override {
    if (!missing_.empty()) GTEST_SKIP() << "Slurm cannot run here: " << missing_;
    ASSERT_NE(daemons_, nullptr) << start_error_;
    // Each test's coordinator names its Slurm jobs apart (its job ids restart at job-1).
    auto cluster = StartCluster(::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = std::move(*cluster);
  }
  void TearDown() override {
    if (HasFailure() && cluster_ != nullptr) std::cerr << cluster_->Logs() << daemons_->Logs();
    // A coordinator killed right after its job ended leaves its allocations
    // behind (it gives them back on its next tick): none may hold the next test's nodes.
    cluster_.reset();
    if (daemons_ != nullptr) SlurmDaemons::CancelAll();
  }

  // The final losses of the same job under the local launcher (computed once).
  static const v1::Job& Reference() {
    static const v1::Job* reference = [] {
      auto* job = new v1::Job();
      auto local = StartCluster(/*slurm_prefix=*/"");
      if (!local.ok()) return job;
      auto submitted = (*local)->Submit(Spec("local"));
      if (!submitted.ok()) return job;
      auto done = (*local)->WaitFinished(submitted->id(), absl::Seconds(150));
      if (done.ok()) *job = *done;
      return job;
    }();
    return *reference;
  }

  void ExpectReferenceLoss(const v1::Job& job) {
    const v1::Job& reference = Reference();
    ASSERT_EQ(reference.state(), v1::JOB_SUCCEEDED) << "the local run failed";
    ASSERT_FALSE(reference.last_train().losses().empty());
    EXPECT_EQ(job.step(), reference.step());
    for (const auto& [modality, loss] : reference.last_train().losses()) {
      EXPECT_EQ(job.last_train().losses().at(modality), loss) << modality;
    }
  }

  // The Slurm job the trainers run in.
  static std::string TrainersSlurmJob(const v1::Job& job) {
    for (const v1::WorkerInfo& w : job.workers()) {
      if (w.ref().role() == v1::ROLE_TRAINER) return w.cluster_job_id();
    }
    return "";
  }

  // Waits for a checkpoint and some steps past it.
  absl::StatusOr<v1::Job> WaitMidRun(const std::string& job_id) {
    return cluster_->WaitJob(
        job_id,
        [](const v1::Job& j) {
          return IsFinished(j) || (j.latest_checkpoint_step() >= 10 && j.step() >= 15);
        },
        absl::Seconds(120));
  }

  // "ID.STEP NODE" of a worker's job step ("trainer-1-g0").
  static absl::StatusOr<std::pair<std::string, std::string>> Step(const std::string& slurm_job,
                                                                  const std::string& name) {
    ASSIGN_OR_RETURN(
        std::string steps,
        Sh(absl::StrCat("squeue --noheader --steps --jobs=", slurm_job, " --format='%i %j %N'")));
    for (absl::string_view line : absl::StrSplit(steps, '\n', absl::SkipEmpty())) {
      std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (f.size() == 3 && f[1] == name) return std::make_pair(f[0], f[2]);
    }
    return absl::NotFoundError(absl::StrCat("no step ", name, " in:\n", steps));
  }

  static std::string SlurmState(const std::string& slurm_job) {
    return std::string(absl::StripAsciiWhitespace(
        Sh(absl::StrCat("squeue --noheader --states=all --jobs=", slurm_job, " --format=%T"))
            .value_or("")));
  }

  void EndAllocationMidRun(
      const std::function<std::string(const std::string&, const std::string&)>& end,
      const std::string& state);

  static std::string missing_, start_error_;
  static std::unique_ptr<SlurmDaemons> daemons_;
  std::unique_ptr<Cluster> cluster_;
};

std::string SlurmTest::missing_, SlurmTest::start_error_;
std::unique_ptr<SlurmDaemons> SlurmTest::daemons_;

TEST_F(SlurmTest, TwoNodesTwoRanksEndAtTheLocalLoss) {
  auto job =
      cluster_->Submit(Spec("slurm", "cluster { nodes: 2 cpus_per_task: 2 }", /*evaluators=*/1));
  ASSERT_TRUE(job.ok()) << job.status();
  auto running = cluster_->WaitJob(
      job->id(),
      [](const v1::Job& j) {
        if (IsFinished(j)) return true;
        if (j.step() == 0) return false;
        for (const v1::WorkerInfo& w : j.workers()) {
          if (w.state() != v1::WORKER_RUNNING || w.cluster_job_state() != "RUNNING") return false;
        }
        return true;
      },
      absl::Seconds(120));
  ASSERT_TRUE(running.ok()) << running.status();
  ASSERT_EQ(running->state(), v1::JOB_RUNNING) << running->reason();
  const std::string slurm_job = TrainersSlurmJob(*running);
  ASSERT_FALSE(slurm_job.empty());
  // One Slurm job of two nodes (8 CPUs); the ranks' steps spread two on each.
  EXPECT_EQ(absl::StripAsciiWhitespace(
                Sh(absl::StrCat("squeue --noheader --jobs=", slurm_job, " --format='%D %C %T'"))
                    .value_or("")),
            "2 8 RUNNING");
  std::map<std::string, int> ranks_per_node;
  for (int r = 0; r < 4; ++r) {
    auto step = Step(slurm_job, absl::StrCat("trainer-", r, "-g0"));
    ASSERT_TRUE(step.ok()) << step.status();
    ++ranks_per_node[step->second];
  }
  EXPECT_EQ(ranks_per_node.size(), 2u);
  for (const auto& [node, ranks] : ranks_per_node) EXPECT_EQ(ranks, 2) << node;
  // `modamba status` shows each worker's Slurm job and its state.
  std::vector<std::string> args = {"status", job->id(),
                                   absl::StrCat("--coordinator=127.0.0.1:", cluster_->grpc_port()),
                                   "--token_file=" + cluster_->root() + "/token"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  std::ostringstream status;
  std::streambuf* stdout_buffer = std::cout.rdbuf(status.rdbuf());
  const int code = RunClientCommand(static_cast<int>(argv.size()), argv.data());
  std::cout.rdbuf(stdout_buffer);
  EXPECT_EQ(code, 0);
  EXPECT_TRUE(absl::StrContains(status.str(), absl::StrCat("slurm ", slurm_job, " RUNNING on ")))
      << status.str();
  // The evaluator is a Slurm job of its own.
  std::string evaluator_job;
  for (const v1::WorkerInfo& w : running->workers()) {
    if (w.ref().role() == v1::ROLE_TRAINER) {
      EXPECT_EQ(w.cluster_job_id(), slurm_job);
    } else {
      evaluator_job = w.cluster_job_id();
    }
  }
  EXPECT_FALSE(evaluator_job.empty());
  EXPECT_NE(evaluator_job, slurm_job);

  auto done = cluster_->WaitFinished(job->id(), absl::Seconds(150));
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->reason();
  EXPECT_EQ(done->restarts(), 0);
  ExpectReferenceLoss(*done);
  auto checkpoints = cluster_->Checkpoints(job->id());
  ASSERT_TRUE(checkpoints.ok() && !checkpoints->empty());
  EXPECT_TRUE(checkpoints->back().evaluated());
  // The ended job's allocations are given back.
  for (const std::string& id : {slurm_job, evaluator_job}) {
    const absl::Time give_up = absl::Now() + absl::Seconds(20);
    while (SlurmState(id) == "RUNNING" && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(200));
    }
    EXPECT_EQ(SlurmState(id), "CANCELLED") << id;
  }
}

TEST_F(SlurmTest, CancelledStepResumesFromTheNewestCheckpoint) {
  auto job = cluster_->Submit(Spec("scancel"));
  ASSERT_TRUE(job.ok()) << job.status();
  auto running = WaitMidRun(job->id());
  ASSERT_TRUE(running.ok()) << running.status();
  ASSERT_EQ(running->state(), v1::JOB_RUNNING) << running->reason();
  const std::string slurm_job = TrainersSlurmJob(*running);
  auto step = Step(slurm_job, "trainer-1-g0");
  ASSERT_TRUE(step.ok()) << step.status();
  ASSERT_TRUE(Sh("scancel " + step->first).ok());

  auto done = cluster_->WaitFinished(job->id(), absl::Seconds(150));
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->reason();
  EXPECT_EQ(done->restarts(), 1);
  ExpectReferenceLoss(*done);
  // The next generation ran as new steps of the same allocation.
  EXPECT_EQ(TrainersSlurmJob(*done), slurm_job);
}

// Runs a job, ends its allocation mid-run with `end` (given the Slurm job
// and the node of rank 2), and checks that the restart names the state Slurm
// ended it in and resumes in a new allocation from the newest checkpoint.
void SlurmTest::EndAllocationMidRun(
    const std::function<std::string(const std::string&, const std::string&)>& end,
    const std::string& state) {
  auto job = cluster_->Submit(Spec("ended"));
  ASSERT_TRUE(job.ok()) << job.status();
  auto running = WaitMidRun(job->id());
  ASSERT_TRUE(running.ok()) << running.status();
  ASSERT_EQ(running->state(), v1::JOB_RUNNING) << running->reason();
  const std::string slurm_job = TrainersSlurmJob(*running);
  auto step = Step(slurm_job, "trainer-2-g0");
  ASSERT_TRUE(step.ok()) << step.status();
  ASSERT_TRUE(Sh(end(slurm_job, step->second)).ok());

  // The restart says why.
  auto restarted = cluster_->WaitJob(
      job->id(), [](const v1::Job& j) { return IsFinished(j) || j.restarts() > 0; },
      absl::Seconds(60));
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  EXPECT_TRUE(absl::StrContains(
      restarted->reason(), absl::StrCat("ended with its Slurm job ", slurm_job, " (", state, ")")))
      << restarted->reason();

  auto done = cluster_->WaitFinished(job->id(), absl::Seconds(150));
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->reason();
  EXPECT_EQ(done->restarts(), 1);
  ExpectReferenceLoss(*done);
  // Slurm ended the first allocation; the coordinator asked for a second.
  EXPECT_EQ(SlurmState(slurm_job), state);
  EXPECT_NE(TrainersSlurmJob(*done), slurm_job);
}

TEST_F(SlurmTest, NodeSetDownMidRunResumesInANewAllocation) {
  EndAllocationMidRun(
      [](const std::string& slurm_job, const std::string& node) {
        return absl::StrCat("scontrol update NodeName=", node, " State=DOWN Reason=slurm_test");
      },
      "NODE_FAIL");
}

TEST_F(SlurmTest, AllocationCancelledFromOutsideResumesInANewOne) {
  EndAllocationMidRun(
      [](const std::string& slurm_job, const std::string& node) { return "scancel " + slurm_job; },
      "CANCELLED");
}

TEST_F(SlurmTest, RestartedCoordinatorAdoptsTheRunningSteps) {
  auto job = cluster_->Submit(Spec("adopted"));
  ASSERT_TRUE(job.ok()) << job.status();
  auto running = WaitMidRun(job->id());
  ASSERT_TRUE(running.ok()) << running.status();
  ASSERT_EQ(running->state(), v1::JOB_RUNNING) << running->reason();
  const std::string slurm_job = TrainersSlurmJob(*running);
  ASSERT_TRUE(cluster_->KillCoordinator().ok());
  absl::SleepFor(absl::Seconds(1));
  ASSERT_TRUE(cluster_->RestartCoordinator().ok());

  auto done = cluster_->WaitFinished(job->id(), absl::Seconds(150));
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->reason();
  EXPECT_EQ(done->restarts(), 0);  // the steps ran on, in the same allocation
  EXPECT_EQ(TrainersSlurmJob(*done), slurm_job);
  ExpectReferenceLoss(*done);
}

TEST_F(SlurmTest, AJobWaitsInSlurmsQueueLongerThanTheRegisterTimeout) {
  // Someone else's job holds every node for 40 s, longer than the 30 s
  // workers have to register.
  ASSERT_TRUE(Sh("sbatch --nodes=3 --exclusive --output=/dev/null --wrap='sleep 40'").ok());
  const absl::Time blocked_until = absl::Now() + absl::Seconds(40);
  auto job = cluster_->Submit(Spec("queued"));
  ASSERT_TRUE(job.ok()) << job.status();
  auto queued = cluster_->WaitJob(
      job->id(),
      [](const v1::Job& j) {
        return IsFinished(j) ||
               (j.workers_size() == 4 && j.workers(0).cluster_job_state() == "PENDING (Resources)");
      },
      absl::Seconds(30));
  ASSERT_TRUE(queued.ok()) << queued.status();
  for (const v1::WorkerInfo& w : queued->workers()) {
    EXPECT_EQ(w.state(), v1::WORKER_STARTING);
    EXPECT_EQ(w.cluster_job_state(), "PENDING (Resources)");
  }

  auto done = cluster_->WaitFinished(job->id(), absl::Seconds(150));
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->reason();
  EXPECT_GE(absl::Now(), blocked_until);
  EXPECT_EQ(done->restarts(), 0);
  ExpectReferenceLoss(*done);
}

TEST_F(SlurmTest, RefusalsArriveInSlurmsWords) {
  const std::pair<std::string, std::string> cases[] = {
      {"cluster { nodes: 2 partition: \"nowhere\" }", "Invalid partition name specified"},
      // Four GPUs on one node, which has two.
      {"cluster { nodes: 1 } device: \"gpu\"", "Requested node configuration is not available"},
      // More nodes than the partition has.
      {"cluster { nodes: 4 }", "Node count specification invalid"},
  };
  for (const auto& [cluster, words] : cases) {
    auto job = cluster_->Submit(Spec("refused", cluster));
    ASSERT_TRUE(job.ok()) << job.status();
    auto done = cluster_->WaitFinished(job->id(), absl::Seconds(30));
    ASSERT_TRUE(done.ok()) << done.status();
    EXPECT_EQ(done->state(), v1::JOB_FAILED) << cluster;
    EXPECT_TRUE(absl::StrContains(done->reason(), "Slurm refused")) << done->reason();
    EXPECT_TRUE(absl::StrContains(done->reason(), words)) << done->reason();
  }
}

}  // namespace
}  // namespace modamba
