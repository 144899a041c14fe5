// The raw data directory (see the data README beside the repository):
//   mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
//   fsdd/recordings/{digit}_{speaker}_{take}.flac        8 kHz mono
//   cathy/recordings/arctic_aNNNN.flac + cathy/transcripts.tsv (id TAB sentence)
//   tinyshakespeare/input.txt
// and its conventional splits: MNIST t10k, FSDD takes 0-4, cathy
// arctic_a0361..a0400 and the last 10% of the tinyshakespeare bytes are
// held out (our "val" split); the rest is "train". The speech rules are
// RawSelection's (flags of `data build`), these their defaults.
#ifndef MODAMBA_CORE_DATA_RAW_DATA_H_
#define MODAMBA_CORE_DATA_RAW_DATA_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/data/audio.h"
#include "core/data/mnist.h"

namespace modamba::data {

enum Split { kTrain = 0, kVal = 1 };
inline constexpr int kNumSplits = 2;
const char* SplitName(int split);  // "train", "val"

// The raw data directory: `flag` when set, else $MODAMBA_DATA_DIR, else
// ../shared/data beside the repository (found from $BUILD_WORKSPACE_DIRECTORY,
// the working directory or the running binary, also inside Bazel's trees).
// The error says how to get the data.
absl::StatusOr<std::string> FindRawDataDir(const std::string& flag);

// Offset of the first held-out byte of a text of `bytes` bytes.
size_t TextSplitOffset(size_t bytes);

struct Recording {
  std::string id;          // "fsdd/7_jackson_32", "cathy/arctic_a0001"
  int digit = -1;          // FSDD only
  std::string transcript;  // the digit word, or the cathy sentence
  Audio audio;
};

struct RawCorpus {
  std::array<MnistSet, kNumSplits> images;
  std::array<std::vector<Recording>, kNumSplits> fsdd;
  std::array<std::vector<Recording>, kNumSplits> cathy;
  std::array<std::string, kNumSplits> text;
  // Files skipped as bad (RawSelection::skip_bad), "PATH: why".
  std::vector<std::string> skipped;
};

struct RawSelection {
  bool images = true;
  bool speech = true;
  bool text = true;
  // Items kept per split, from the start of a fixed order (-1: all). FSDD is
  // ordered by (take, speaker, digit) so that a slice covers every digit.
  std::array<int64_t, kNumSplits> mnist = {-1, -1};
  std::array<int64_t, kNumSplits> fsdd = {-1, -1};
  std::array<int64_t, kNumSplits> cathy = {-1, -1};
  std::array<int64_t, kNumSplits> text_bytes = {-1, -1};
  // Split rules: FSDD recordings of takes [first, last] and cathy utterances
  // arctic_aNNNN with NNNN in [first, last] are held out.
  std::pair<int, int> fsdd_val_takes = {0, 4};
  std::pair<int, int> cathy_val_numbers = {361, 400};
  // Skip (and list) a file beside the recordings that is not one, and a train
  // item whose content equals a held-out item's, instead of failing.
  bool skip_bad = false;
};

// Reads and checks what `selection` asks for; errors name the file. A split
// of a source that ends up empty (without a limit of 0 asking for it) is an
// error naming the folder and the rule; so is a train item (image or
// recording) whose content equals a held-out one's, naming both.
absl::StatusOr<RawCorpus> LoadRawCorpus(const std::string& raw_dir, const RawSelection& selection);

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_RAW_DATA_H_
