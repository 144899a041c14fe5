#include "core/data/shard.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace modamba::data {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "shards are little-endian");

constexpr char kMagic[8] = {'M', 'M', 'B', 'S', 'H', 'R', 'D', '1'};
constexpr uint32_t kVersion = 1;
constexpr int64_t kHeaderBytes = 64;

int64_t Align8(int64_t x) { return (x + 7) & ~int64_t{7}; }

struct Layout {
  int64_t crc_offset = kHeaderBytes;
  int64_t patch_index_offset = 0;
  int64_t records_offset = 0;
  int64_t record_bytes = 0;
  int64_t patches_offset = 0;
  int64_t file_bytes = 0;
};

Layout ComputeLayout(int64_t seq_len, int64_t n, int64_t patch_dim, int64_t num_patches) {
  Layout l;
  l.patch_index_offset = Align8(l.crc_offset + 4 * n);
  l.records_offset =
      patch_dim > 0 ? Align8(l.patch_index_offset + 8 * (n + 1)) : l.patch_index_offset;
  l.record_bytes = seq_len * (7 + (patch_dim > 0 ? 1 : 0));
  l.patches_offset = l.records_offset + n * l.record_bytes;
  l.file_bytes = l.patches_offset + num_patches * patch_dim * 4;
  return l;
}

template <typename T>
void Put(std::string* s, size_t offset, T value) {
  std::memcpy(&(*s)[offset], &value, sizeof(T));
}

template <typename T>
T Get(const char* s, size_t offset) {
  T value;
  std::memcpy(&value, s + offset, sizeof(T));
  return value;
}

// zlib's crc32 treats a null buffer as "give me the initial value", so an
// empty patch list must not reach it.
uint32_t Crc(uint32_t crc, const void* data, size_t n) {
  if (n == 0) return crc;
  return static_cast<uint32_t>(crc32_z(crc, static_cast<const Bytef*>(data), n));
}

// Streams bytes to `path.tmp.<pid>` and renames it over `path` on Commit();
// an abandoned writer removes its temporary file.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path)
      : path_(std::move(path)), tmp_(absl::StrCat(path_, ".tmp.", getpid())) {}
  ~AtomicFile() {
    if (file_ != nullptr) {
      std::fclose(file_);
      std::remove(tmp_.c_str());
    }
  }

  absl::Status Begin() {
    file_ = std::fopen(tmp_.c_str(), "wb");
    if (file_ == nullptr) return absl::InternalError(absl::StrCat(tmp_, ": ", std::strerror(errno)));
    return absl::OkStatus();
  }
  absl::Status Write(const void* data, size_t n) {
    if (n > 0 && std::fwrite(data, 1, n, file_) != n) {
      return absl::InternalError(absl::StrCat(tmp_, ": write failed: ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }
  absl::Status Commit() {
    const bool ok = std::fflush(file_) == 0 && ::fsync(fileno(file_)) == 0;
    const bool closed = std::fclose(file_) == 0;
    file_ = nullptr;
    if (!ok || !closed || std::rename(tmp_.c_str(), path_.c_str()) != 0) {
      const std::string error = std::strerror(errno);
      std::remove(tmp_.c_str());
      return absl::InternalError(absl::StrCat(path_, ": cannot write: ", error));
    }
    return absl::OkStatus();
  }

 private:
  std::string path_;
  std::string tmp_;
  FILE* file_ = nullptr;
};

}  // namespace

absl::Status WriteShard(const std::string& path, const PackedSequences& data, int64_t begin,
                        int64_t end) {
  if (begin < 0 || end > data.num_sequences || begin > end) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": bad sequence range [", begin, ", ",
                                                   end, ") of ", data.num_sequences));
  }
  const int64_t n = end - begin;
  const int64_t L = data.seq_len;
  const int64_t P = data.patch_dim;
  const int64_t first_patch = data.patch_begin[begin];
  const int64_t num_patches = P > 0 ? data.patch_begin[end] - first_patch : 0;
  const Layout layout = ComputeLayout(L, n, P, num_patches);

  std::string header(layout.records_offset, '\0');
  std::memcpy(&header[0], kMagic, 8);
  Put<uint32_t>(&header, 8, kVersion);
  Put<uint32_t>(&header, 12, static_cast<uint32_t>(L));
  Put<uint64_t>(&header, 16, static_cast<uint64_t>(n));
  Put<uint32_t>(&header, 24, static_cast<uint32_t>(P));
  Put<uint64_t>(&header, 32, static_cast<uint64_t>(num_patches));
  Put<uint32_t>(&header, 40, Crc(0, header.data(), 40));

  std::string records(n * layout.record_bytes, '\0');
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = begin + i;
    char* r = &records[i * layout.record_bytes];
    std::memcpy(r, data.tokens.data() + s * L, 4 * L);
    std::memcpy(r + 4 * L, data.modality.data() + s * L, L);
    std::memcpy(r + 5 * L, data.loss_mask.data() + s * L, L);
    std::memcpy(r + 6 * L, data.doc_start.data() + s * L, L);
    uint32_t crc;
    if (P > 0) {
      std::memcpy(r + 7 * L, data.patch_flag.data() + s * L, L);
      Put<uint64_t>(&header, layout.patch_index_offset + 8 * i,
                    static_cast<uint64_t>(data.patch_begin[s] - first_patch));
      crc = Crc(Crc(0, r, layout.record_bytes), data.patches.data() + data.patch_begin[s] * P,
                4 * P * (data.patch_begin[s + 1] - data.patch_begin[s]));
    } else {
      crc = Crc(0, r, layout.record_bytes);
    }
    Put<uint32_t>(&header, layout.crc_offset + 4 * i, crc);
  }
  if (P > 0) Put<uint64_t>(&header, layout.patch_index_offset + 8 * n, num_patches);

  AtomicFile file(path);
  absl::Status status = file.Begin();
  if (status.ok()) status = file.Write(header.data(), header.size());
  if (status.ok()) status = file.Write(records.data(), records.size());
  if (status.ok() && P > 0) {
    status = file.Write(data.patches.data() + first_patch * P, 4 * P * num_patches);
  }
  if (!status.ok()) return status;
  return file.Commit();
}

ShardFile::~ShardFile() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<std::unique_ptr<ShardFile>> ShardFile::Open(const std::string& path) {
  std::unique_ptr<ShardFile> shard(new ShardFile);
  shard->path_ = path;
  shard->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (shard->fd_ < 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open shard: ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(shard->fd_, &st) != 0) {
    return absl::InternalError(absl::StrCat(path, ": ", std::strerror(errno)));
  }
  auto bad = [&](const std::string& what) {
    return absl::DataLossError(absl::StrCat(path, ": corrupt shard: ", what));
  };
  char header[kHeaderBytes];
  if (st.st_size < kHeaderBytes ||
      ::pread(shard->fd_, header, kHeaderBytes, 0) != kHeaderBytes) {
    return bad(absl::StrCat("truncated header (", st.st_size, " bytes)"));
  }
  if (std::memcmp(header, kMagic, 8) != 0) return bad("bad magic");
  if (Get<uint32_t>(header, 40) != Crc(0, header, 40)) return bad("header checksum mismatch");
  if (Get<uint32_t>(header, 8) != kVersion) {
    return bad(absl::StrCat("unsupported version ", Get<uint32_t>(header, 8)));
  }
  shard->seq_len_ = static_cast<int>(Get<uint32_t>(header, 12));
  shard->num_sequences_ = static_cast<int64_t>(Get<uint64_t>(header, 16));
  shard->patch_dim_ = static_cast<int>(Get<uint32_t>(header, 24));
  const int64_t num_patches = static_cast<int64_t>(Get<uint64_t>(header, 32));
  const Layout layout =
      ComputeLayout(shard->seq_len_, shard->num_sequences_, shard->patch_dim_, num_patches);
  if (st.st_size != layout.file_bytes) {
    return bad(absl::StrCat("size is ", st.st_size, " bytes, header implies ",
                            layout.file_bytes, st.st_size < layout.file_bytes ? " (truncated)" : ""));
  }
  const int64_t n = shard->num_sequences_;
  std::string index(layout.records_offset - kHeaderBytes, '\0');
  if (::pread(shard->fd_, index.data(), index.size(), kHeaderBytes) !=
      static_cast<ssize_t>(index.size())) {
    return bad("cannot read the sequence index");
  }
  shard->crc_.resize(n);
  for (int64_t i = 0; i < n; ++i) shard->crc_[i] = Get<uint32_t>(index.data(), 4 * i);
  if (shard->patch_dim_ > 0) {
    shard->patch_begin_.resize(n + 1);
    const size_t base = layout.patch_index_offset - kHeaderBytes;
    for (int64_t i = 0; i <= n; ++i) {
      shard->patch_begin_[i] = static_cast<int64_t>(Get<uint64_t>(index.data(), base + 8 * i));
      if (shard->patch_begin_[i] < (i > 0 ? shard->patch_begin_[i - 1] : 0)) {
        return bad(absl::StrCat("patch index decreases at sequence ", i));
      }
    }
    if (shard->patch_begin_[n] != num_patches) return bad("patch index does not end at num_patches");
  }
  shard->records_offset_ = layout.records_offset;
  shard->record_bytes_ = layout.record_bytes;
  shard->patches_offset_ = layout.patches_offset;
  return shard;
}

absl::Status ShardFile::Read(int64_t i, const SequenceSink& sink) const {
  if (i < 0 || i >= num_sequences_) {
    return absl::OutOfRangeError(
        absl::StrCat(path_, ": sequence ", i, " outside [0, ", num_sequences_, ")"));
  }
  const int64_t L = seq_len_;
  std::string record(record_bytes_, '\0');
  const int64_t offset = records_offset_ + i * record_bytes_;
  if (::pread(fd_, record.data(), record_bytes_, offset) != record_bytes_) {
    return absl::DataLossError(absl::StrCat(path_, ": cannot read sequence ", i, ": ",
                                            std::strerror(errno)));
  }
  uint32_t crc = Crc(0, record.data(), record_bytes_);
  if (patch_dim_ > 0) {
    const int64_t count = patch_begin_[i + 1] - patch_begin_[i];
    const size_t old_size = sink.patches->size();
    sink.patches->resize(old_size + count * patch_dim_);
    const int64_t bytes = 4 * count * patch_dim_;
    float* dst = sink.patches->data() + old_size;
    if (::pread(fd_, dst, bytes, patches_offset_ + 4 * patch_begin_[i] * patch_dim_) != bytes) {
      sink.patches->resize(old_size);
      return absl::DataLossError(absl::StrCat(path_, ": cannot read the patches of sequence ", i));
    }
    crc = Crc(crc, dst, bytes);
    if (crc != crc_[i]) sink.patches->resize(old_size);
  }
  if (crc != crc_[i]) {
    return absl::DataLossError(absl::StrCat(path_, ": corrupt shard: checksum mismatch in sequence ", i));
  }
  const char* r = record.data();
  std::memcpy(sink.tokens, r, 4 * L);
  int64_t flagged = 0;
  for (int64_t t = 0; t < L; ++t) {
    sink.modality[t] = static_cast<uint8_t>(r[4 * L + t]);
    sink.loss_mask[t] = static_cast<uint8_t>(r[5 * L + t]);
    sink.doc_start[t] = static_cast<uint8_t>(r[6 * L + t]);
    sink.patch_flag[t] = patch_dim_ > 0 ? static_cast<uint8_t>(r[7 * L + t]) : 0;
    flagged += sink.patch_flag[t];
  }
  if (patch_dim_ > 0 && flagged != patch_begin_[i + 1] - patch_begin_[i]) {
    return absl::DataLossError(absl::StrCat(path_, ": corrupt shard: sequence ", i, " flags ",
                                            flagged, " patch positions but stores ",
                                            patch_begin_[i + 1] - patch_begin_[i]));
  }
  return absl::OkStatus();
}

}  // namespace modamba::data
