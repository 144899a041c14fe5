#include "core/data/test_util.h"

// jpeglib.h needs FILE and size_t declared first.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <jpeglib.h>

#include "core/data/raw_data.h"
#include "glog/logging.h"

namespace modamba::data::testing {

std::string ScratchDir(const std::string& name) {
  const char* root = std::getenv("TEST_TMPDIR");
  std::filesystem::path dir = std::filesystem::path(root != nullptr ? root : "/tmp") / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

std::string RawDataDirOrEmpty() {
  absl::StatusOr<std::string> dir = FindRawDataDir("");
  if (!dir.ok()) {
    LOG(WARNING) << dir.status();
    return "";
  }
  return *dir;
}

void CopyDamaged(const std::string& from, const std::string& to, long keep, long flip) {
  std::ifstream in(from, std::ios::binary);
  CHECK(in) << from;
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (keep >= 0 && static_cast<size_t>(keep) < bytes.size()) bytes.resize(keep);
  if (flip >= 0) {
    CHECK_LT(static_cast<size_t>(flip), bytes.size());
    bytes[flip] = static_cast<char>(bytes[flip] ^ 0xff);
  }
  std::ofstream out(to, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), bytes.size());
  CHECK(out) << to;
}

void WriteJpeg(const std::string& path, int width, int height, int components,
               const std::vector<uint8_t>& pixels, bool progressive, int quality) {
  CHECK_EQ(pixels.size(), static_cast<size_t>(width) * height * components);
  FILE* file = std::fopen(path.c_str(), "wb");
  CHECK(file != nullptr) << path;
  jpeg_compress_struct cinfo;
  jpeg_error_mgr error;
  cinfo.err = jpeg_std_error(&error);
  jpeg_create_compress(&cinfo);
  jpeg_stdio_dest(&cinfo, file);
  cinfo.image_width = width;
  cinfo.image_height = height;
  cinfo.input_components = components;
  cinfo.in_color_space = components == 1 ? JCS_GRAYSCALE : components == 3 ? JCS_RGB : JCS_CMYK;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  if (progressive) jpeg_simple_progression(&cinfo);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(&pixels[static_cast<size_t>(cinfo.next_scanline) *
                                                 width * components]);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::fclose(file);
}

}  // namespace modamba::data::testing
