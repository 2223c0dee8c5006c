// torch.save checkpoints in every layout, compared bit-exactly with the same
// tensors saved by Python as safetensors (tests/python/gen_checkpoints.py).
#include <filesystem>
#include <fstream>
#include <random>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "io/checkpoint.hpp"
#include "test_util.hpp"

using namespace ud2m;

namespace {

std::string ref(const std::string& name) { return (test::refs_dir("checkpoints") / name).string(); }

// Every expected tensor is present with the same dtype, shape and bits, and nothing else.
void expect_same_tensors(const TensorMap& actual, const TensorMap& expected) {
  for (auto& [name, t] : expected) {
    auto it = actual.find(name);
    ASSERT_NE(it, actual.end()) << "missing " << name;
    EXPECT_EQ(it->second.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(it->second.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(it->second, t)) << name;
  }
  for (auto& [name, t] : actual) EXPECT_TRUE(expected.count(name)) << "unexpected " << name;
}

void expect_matches_reference(const std::string& file, const std::string& expected) {
  SCOPED_TRACE(file);
  expect_same_tensors(read_checkpoint(ref(file)).tensors, read_safetensors(ref(expected)).tensors);
}

// True if p lies in a mapping of `path` (from /proc/self/maps).
bool lies_in_a_mapping_of(const void* p, const std::filesystem::path& path) {
  const auto file = std::filesystem::canonical(path).string();
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.size() < file.size() || line.compare(line.size() - file.size(), file.size(), file) != 0) continue;
    const auto dash = line.find('-');
    const auto start = std::stoull(line.substr(0, dash), nullptr, 16);
    const auto end = std::stoull(line.substr(dash + 1), nullptr, 16);
    const auto address = reinterpret_cast<uintptr_t>(p);
    if (address >= start && address < end) return true;
  }
  return false;
}

}  // namespace

// read_checkpoint maps the file: a zip checkpoint's tensors are views of the
// page cache (a multi-GiB .pt and the network built from it are not both held
// in heap memory), and writing to one copies its pages, never the file.
TEST(Checkpoint, ZipTensorsViewTheMappedFileAndWritesStayPrivate) {
  const auto path = test::temp_dir() / "plain.pt";
  std::filesystem::copy_file(ref("plain.pt"), path, std::filesystem::copy_options::overwrite_existing);
  const auto bytes = read_file(path.string());
  const auto expected = read_safetensors(ref("plain.expected.safetensors")).tensors;
  {
    auto file = read_checkpoint(path.string());
    ASSERT_FALSE(file.tensors.empty());
    for (auto& [name, t] : file.tensors) {
      if (t.numel() == 0) continue;  // no bytes to view
      EXPECT_TRUE(lies_in_a_mapping_of(t.data_ptr(), path)) << name;
      t.add_(1);  // in place, on the mapped pages
    }
    EXPECT_FALSE(torch::equal(file.tensors.begin()->second, expected.at(file.tensors.begin()->first)));
  }
  EXPECT_EQ(read_file(path.string()), bytes);
  expect_same_tensors(read_checkpoint(path.string()).tensors, expected);
  // Once the tensors are gone, so is the mapping.
  {
    auto file = read_checkpoint(path.string());
    const void* data = file.tensors.at("conv.weight").data_ptr();
    file.tensors.clear();
    EXPECT_FALSE(lies_in_a_mapping_of(data, path));
  }
}

TEST(Checkpoint, DetectsFormatsFromBytes) {
  EXPECT_EQ(detect_checkpoint_format(read_file(ref("plain.pt"))), CheckpointFormat::TorchZip);
  EXPECT_EQ(detect_checkpoint_format(read_file(ref("legacy.pt"))), CheckpointFormat::TorchLegacy);
  EXPECT_EQ(detect_checkpoint_format(read_file(ref("plain.expected.safetensors"))), CheckpointFormat::Safetensors);
  EXPECT_EQ(detect_checkpoint_format("hello world"), CheckpointFormat::Unknown);
}

TEST(Checkpoint, ReadsPlainAndOrderedStateDicts) {
  expect_matches_reference("plain.pt", "plain.expected.safetensors");
  expect_matches_reference("ordered.pth", "plain.expected.safetensors");
  expect_matches_reference("protocol4.pt", "plain.expected.safetensors");
  expect_matches_reference("protocol5_legacy.pt", "plain.expected.safetensors");
}

TEST(Checkpoint, ReadsDeflatedZip) {
  expect_matches_reference("deflated.pt", "plain.expected.safetensors");
  const auto bytes = read_file(ref("deflated.pt"));
  for (size_t cut : {bytes.size() / 2, bytes.size() - 30})
    EXPECT_THROW(parse_checkpoint(bytes.substr(0, cut), "deflated.pt"), Error);
}

TEST(Checkpoint, ReadsZip64) {
  const auto bytes = read_file(ref("zip64.pt"));
  ASSERT_NE(bytes.find(std::string("PK\x06\x06", 4)), std::string::npos) << "no zip64 end record";
  expect_matches_reference("zip64.pt", "plain.expected.safetensors");
}

TEST(Checkpoint, ReadsBigEndianZip) { expect_matches_reference("big_endian.pt", "big_endian.expected.safetensors"); }

TEST(Checkpoint, ReadsSafetensorsThroughTheSameEntryPoint) {
  expect_matches_reference("plain.expected.safetensors", "plain.expected.safetensors");
}

TEST(Checkpoint, FlattensNestedDictsToDottedNames) {
  expect_matches_reference("nested.pt", "nested.expected.safetensors");
  auto file = read_checkpoint(ref("nested.pt"));
  EXPECT_EQ(file.metadata.at("optimizer.step"), "5");
  expect_same_tensors(state_dict_of(file), read_safetensors(ref("plain.expected.safetensors")).tensors);
}

TEST(Checkpoint, ReadsLightningCheckpointWithMetadata) {
  expect_matches_reference("lightning.ckpt", "lightning.expected.safetensors");
  auto file = read_checkpoint(ref("lightning.ckpt"));
  EXPECT_EQ(file.metadata.at("epoch"), "3");
  EXPECT_EQ(file.metadata.at("global_step"), "10");
  EXPECT_EQ(file.metadata.at("pytorch-lightning_version"), "2.1.0");
  EXPECT_EQ(file.metadata.at("hyper_parameters.lr"), "0.0001");
  EXPECT_EQ(file.metadata.at("hyper_parameters.channel_mult"), "(1, 2, 4)");
  EXPECT_EQ(file.metadata.at("hyper_parameters.ema"), "True");
  EXPECT_EQ(file.metadata.at("hyper_parameters.dropout"), "None");
  EXPECT_EQ(file.metadata.at("optimizer_states.0.param_groups.0.lr"), "0.001");
  EXPECT_EQ(file.metadata.at("long_list"), "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, "
                                           "21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, ... (100 items)]");
  // The model weights: Lightning's "state_dict." and DataParallel's "module." removed.
  expect_same_tensors(state_dict_of(file), read_safetensors(ref("plain.expected.safetensors")).tensors);
}

TEST(Checkpoint, DecodesNumpyScalarsAndArrays) {
  expect_matches_reference("numpy.ckpt", "numpy.expected.safetensors");
  auto file = read_checkpoint(ref("numpy.ckpt"));
  EXPECT_EQ(file.metadata.at("hyper_parameters.lr"), "0.0001");
  EXPECT_EQ(file.metadata.at("hyper_parameters.steps"), "5");
  EXPECT_EQ(file.metadata.at("hyper_parameters.flag"), "True");
  EXPECT_EQ(file.metadata.at("hyper_parameters.half"), "0.5");
}

TEST(Checkpoint, RebuildsSharedStoragesViewsAndOffsets) {
  expect_matches_reference("shared.pt", "shared.expected.safetensors");
  auto t = read_checkpoint(ref("shared.pt")).tensors;
  // Views stay views of one storage, as torch.load makes them.
  EXPECT_FALSE(t.at("transposed").is_contiguous());
  EXPECT_EQ(t.at("transposed").data_ptr(), t.at("base").data_ptr());
  EXPECT_EQ(t.at("slice").storage_offset(), 8);
  EXPECT_TRUE(t.at("slice").storage().is_alias_of(t.at("base").storage()));
}

TEST(Checkpoint, ReadsEveryDtype) { expect_matches_reference("dtypes.pt", "dtypes.expected.safetensors"); }

TEST(Checkpoint, ReadsParametersAsTheirData) {
  expect_matches_reference("parameters.pt", "parameters.expected.safetensors");
}

TEST(Checkpoint, ReadsLegacyFormat) {
  expect_matches_reference("legacy.pt", "legacy.expected.safetensors");
  auto file = read_checkpoint(ref("legacy.pt"));
  EXPECT_EQ(file.metadata.at("epoch"), "12");
  EXPECT_EQ(file.metadata.at("name"), "legacy");
  EXPECT_TRUE(file.tensors.at("view.transposed").storage().is_alias_of(file.tensors.at("view.base").storage()));
}

TEST(Checkpoint, ReadsDiffusersBin) {
  auto bin = ref("diffusers_unet/diffusion_pytorch_model.bin");
  if (!std::filesystem::exists(bin)) GTEST_SKIP() << "diffusers was not importable when references were made";
  expect_same_tensors(read_checkpoint(bin).tensors, read_safetensors(ref("diffusers_unet.expected.safetensors")).tensors);
}

TEST(Checkpoint, RefusesWholeModulesUnlessOpaqueRecordsAreAllowed) {
  try {
    read_checkpoint(ref("module.pt"));
    FAIL() << "a pickled nn.Module was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("torch.nn.modules.linear.Linear"), std::string::npos) << e.what();
  }
  CheckpointOptions opaque;
  opaque.opaque_records = true;
  for (auto name : {"module.pt", "module_legacy.pt"}) {
    SCOPED_TRACE(name);
    EXPECT_THROW(read_checkpoint(ref(name)), Error);
    auto file = read_checkpoint(ref(name), opaque);
    EXPECT_EQ(file.tensors.at("_parameters.weight").sizes(), (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(file.tensors.at("_parameters.bias").sizes(), (std::vector<int64_t>{2}));
  }
}

TEST(Checkpoint, OpaqueRecordsOfDictSubclassesKeepTheirItems) {
  EXPECT_THROW(read_checkpoint(ref("attrdict.pt")), Error);
  CheckpointOptions opaque;
  opaque.opaque_records = true;
  auto file = read_checkpoint(ref("attrdict.pt"), opaque);
  EXPECT_TRUE(torch::equal(file.tensors.at("model.w"), torch::ones(2)));
  EXPECT_EQ(file.metadata.at("model.lr"), "0.1");
}

TEST(Checkpoint, TruncatedFilesAreClearErrors) {
  for (auto name : {"plain.pt", "legacy.pt", "lightning.ckpt", "shared.pt"}) {
    const auto bytes = read_file(ref(name));
    for (size_t cut : {size_t(0), size_t(1), size_t(2), size_t(10), size_t(64), bytes.size() / 3,
                       bytes.size() / 2, bytes.size() - 100, bytes.size() - 23, bytes.size() - 1}) {
      SCOPED_TRACE(std::string(name) + " cut at " + std::to_string(cut));
      try {
        parse_checkpoint(bytes.substr(0, cut), name);
        ADD_FAILURE() << "truncated file accepted";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
      }
    }
    // Every cut of the legacy file's tail (its storages) too, byte by byte near the end.
    if (std::string(name) == "legacy.pt")
      for (size_t cut = bytes.size() - 200; cut < bytes.size(); cut += 7)
        EXPECT_THROW(parse_checkpoint(bytes.substr(0, cut), name), Error) << cut;
  }
}

TEST(Checkpoint, CorruptBytesNeverCrash) {
  // Flipping bytes may still give a readable file; it must never crash or throw
  // anything but Error.
  // UD2M_FUZZ_TRIALS=100000 runs a longer search by hand.
  const char* env = std::getenv("UD2M_FUZZ_TRIALS");
  const int trials = env ? std::atoi(env) : 300;
  for (auto name : {"plain.pt", "legacy.pt", "deflated.pt", "numpy.ckpt", "lightning.ckpt", "shared.pt"}) {
    const auto bytes = read_file(ref(name));
    std::mt19937 rng(42);
    for (int trial = 0; trial < trials; ++trial) {
      auto corrupt = bytes;
      // Mostly a few random bytes; sometimes a small integer, where sizes and lengths live.
      for (int k = 0; k < 3; ++k)
        corrupt[rng() % corrupt.size()] = static_cast<char>(trial % 2 ? rng() : rng() % 8);
      try {
        parse_checkpoint(corrupt, name);
      } catch (const Error&) {
      }
    }
  }
}

TEST(Checkpoint, UnknownFormatsAreNamed) {
  auto dir = test::temp_dir();
  write_file_atomic((dir / "notes.txt").string(), "just some text, not weights");
  try {
    read_checkpoint((dir / "notes.txt").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("notes.txt"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("not a model file"), std::string::npos) << e.what();
  }
  std::string tar(1024, '\0');
  tar.replace(257, 5, "ustar");
  EXPECT_THROW(parse_checkpoint(tar, "old.tar"), Error);
  EXPECT_THROW(read_checkpoint((dir / "missing.pt").string()), Error);
}

TEST(Checkpoint, StateDictOfKeepsPlainModelsWhole) {
  TensorFile f;
  f.tensors["model.diffusion_model.w"] = torch::ones(1);
  f.tensors["first_stage_model.w"] = torch::ones(1);
  EXPECT_EQ(state_dict_of(f).size(), 2u);
  EXPECT_TRUE(state_dict_of(f).count("model.diffusion_model.w"));
  TensorFile wrapped;
  wrapped.tensors["module.a"] = torch::ones(1);
  wrapped.tensors["module.b"] = torch::ones(1);
  EXPECT_TRUE(state_dict_of(wrapped).count("a"));
  TensorFile with_optimizer;
  with_optimizer.tensors["model.a"] = torch::ones(1);
  with_optimizer.tensors["optimizer.state.0.exp_avg"] = torch::ones(1);
  auto sd = state_dict_of(with_optimizer);
  ASSERT_EQ(sd.size(), 1u);
  EXPECT_TRUE(sd.count("a"));
  TensorFile ema_only;
  ema_only.tensors["ema.module.a"] = torch::ones(1);
  EXPECT_TRUE(state_dict_of(ema_only).count("a"));
  TensorFile model_and_ema;  // the model wins; its EMA is training state
  model_and_ema.tensors["model.a"] = torch::ones(1);
  model_and_ema.tensors["ema.a"] = torch::zeros(1);
  sd = state_dict_of(model_and_ema);
  ASSERT_EQ(sd.size(), 1u);
  EXPECT_EQ(sd.at("a").item<float>(), 1.0f);
}

TEST(Checkpoint, ZipStoragesAreReadInPlaceAndOutliveTheBuffer) {
  TensorMap tensors;
  {
    auto file = read_checkpoint(ref("shared.pt"));
    tensors = file.tensors;
  }  // the file's buffer is now owned by the tensors alone
  auto expected = read_safetensors(ref("shared.expected.safetensors")).tensors;
  EXPECT_TRUE(torch::equal(tensors.at("slice"), expected.at("slice")));
  tensors.clear();  // releases the buffer (checked by sanitizers, if enabled)
}
