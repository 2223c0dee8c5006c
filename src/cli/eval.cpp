// ud2m eval: compare a folder of restored images with a folder of references
// (paired by file name): PSNR, SSIM, LPIPS per image; FID and KID over the sets
// (Inception features, or a diffusion prior's as a stand-in). With --unpaired
// the folders are only compared as sets (generated images vs real ones).
#include <filesystem>
#include <map>
#include <optional>

#include "cli/commands.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/image.hpp"
#include "core/log.hpp"
#include "core/paths.hpp"
#include "core/progress.hpp"
#include "diffusion/prior.hpp"
#include "metrics/fid.hpp"
#include "metrics/metrics.hpp"
#include "metrics/perceptual.hpp"

namespace ud2m::cli {
namespace {

namespace fs = std::filesystem;

struct EvalArgs {
  std::string ref, pred, inception, feature_prior, json;
  std::vector<std::string> lpips_weights;  // torchvision trunk, lpips heads
  metrics::KidOptions kid;
  bool unpaired = false;
};

struct Pair {
  std::string name, ref, pred;
};

bool is_image_file(const fs::path& p) {
  const auto s = p.string();
  return has_extension(s, ".png") || has_extension(s, ".jpg") || has_extension(s, ".jpeg");
}

// The folder's images by file name without extension (restored PNGs pair with
// JPEG references).
std::map<std::string, std::string> images_by_stem(const std::string& dir, const char* flag) {
  UD2M_CHECK(fs::is_directory(dir), "{} '{}' is not a folder", flag, dir);
  std::map<std::string, std::string> out;
  for (auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file() || !is_image_file(entry.path())) continue;
    auto [it, fresh] = out.emplace(entry.path().stem().string(), entry.path().string());
    UD2M_CHECK(fresh, "{} '{}' holds two images named '{}' ('{}' and '{}'); images are paired by name",
               flag, dir, it->first, it->second, entry.path().string());
  }
  UD2M_CHECK(!out.empty(), "{} '{}' holds no PNG or JPEG images", flag, dir);
  return out;
}

std::vector<Pair> pair_images(const EvalArgs& args, nlohmann::json& unpaired) {
  auto refs = images_by_stem(args.ref, "--ref");
  auto preds = images_by_stem(args.pred, "--pred");
  std::vector<Pair> pairs;
  unpaired = {{"ref", nlohmann::json::array()}, {"pred", nlohmann::json::array()}};
  for (auto& [stem, path] : refs) {
    auto it = preds.find(stem);
    if (it == preds.end())
      unpaired["ref"].push_back(path);
    else
      pairs.push_back({stem, path, it->second});
  }
  for (auto& [stem, path] : preds)
    if (!refs.count(stem)) unpaired["pred"].push_back(path);
  UD2M_CHECK(!pairs.empty(),
             "no image in --pred '{}' has the name of an image in --ref '{}' (images are paired by file name, "
             "extension aside)", args.pred, args.ref);
  for (const char* side : {"ref", "pred"})
    if (!unpaired[side].empty())
      log::warn("{} image(s) in --{} have no partner and are left out, e.g. '{}'", unpaired[side].size(), side,
                unpaired[side][0].get<std::string>());
  return pairs;
}

void check_file(const std::string& path, const char* flag) {
  UD2M_CHECK(fs::is_regular_file(path), "{} '{}' is not a file", flag, path);
}

void check_writable(const std::string& path, const char* flag) {
  if (path.empty()) return;
  auto dir = fs::path(path).parent_path();
  UD2M_CHECK(dir.empty() || fs::is_directory(dir), "{} '{}': the folder '{}' does not exist", flag, path,
             dir.string());
}

struct Networks {
  std::optional<nets::LpipsNet> lpips;
  std::optional<nets::FidInception> inception;
  std::shared_ptr<diffusion::AdmPrior> feature_prior;
};

// Weights load before any image work, so a wrong file fails fast.
Networks load_networks(const EvalArgs& args) {
  Networks n;
  if (!args.lpips_weights.empty()) {
    for (auto& f : args.lpips_weights) check_file(f, "--lpips-weights");
    n.lpips = nets::load_lpips(args.lpips_weights[0], args.lpips_weights[1]);
  }
  if (!args.inception.empty()) {
    check_file(args.inception, "--inception");
    n.inception = nets::load_fid_inception(args.inception);
  }
  if (!args.feature_prior.empty()) {
    auto prior = diffusion::load_prior(args.feature_prior);
    n.feature_prior = std::dynamic_pointer_cast<diffusion::AdmPrior>(prior);
    UD2M_CHECK(n.feature_prior, "--feature-prior '{}' is an {} prior; the features come from an ADM prior's encoder",
               args.feature_prior, prior->description().value("arch", "unknown"));
  }
  return n;
}

// Per feature extractor ("inception", "prior"): the reference and prediction rows.
using FeatureSets = std::map<std::string, std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>>>;

void add_features(Networks& n, const torch::Tensor& image, bool reference, FeatureSets& sets) {
  auto put = [&](const char* name, torch::Tensor f) {
    auto& set = sets[name];
    (reference ? set.first : set.second).push_back(std::move(f));
  };
  if (n.inception) put("inception", metrics::inception_features(*n.inception, image));
  if (n.feature_prior) put("prior", metrics::prior_features(n.feature_prior->net(), image));
}

struct PerImage {
  nlohmann::json rows = nlohmann::json::array();
  FeatureSets features;
};

PerImage evaluate_pairs(const std::vector<Pair>& pairs, Networks& n) {
  PerImage out;
  Progress progress("eval", static_cast<int>(pairs.size()));
  for (auto& p : pairs) {
    auto ref = read_image(p.ref, 0);
    auto pred = read_image(p.pred, static_cast<int>(ref.size(1)));
    UD2M_CHECK(pred.sizes() == ref.sizes(), "'{}' is {}x{} but its reference '{}' is {}x{}", p.pred, pred.size(3),
               pred.size(2), p.ref, ref.size(3), ref.size(2));
    UD2M_CHECK(ref.size(2) >= 11 && ref.size(3) >= 11, "'{}' is {}x{}; SSIM needs at least 11x11 pixels", p.ref,
               ref.size(3), ref.size(2));
    nlohmann::json row = {{"name", p.name}, {"ref", p.ref}, {"pred", p.pred},
                          {"psnr", metrics::psnr(pred, ref)}, {"ssim", metrics::ssim(pred, ref)}};
    if (n.lpips) row["lpips"] = metrics::lpips_per_image(*n.lpips, pred, ref).item<double>();
    add_features(n, ref, true, out.features);
    add_features(n, pred, false, out.features);
    out.rows.push_back(row);
    progress.step();
  }
  return out;
}

nlohmann::json means(const nlohmann::json& rows) {
  nlohmann::json mean;
  for (const char* c : {"psnr", "ssim", "lpips"}) {
    if (!rows[0].contains(c)) continue;
    double sum = 0;
    for (auto& r : rows) sum += r[c].get<double>();
    mean[c] = sum / static_cast<double>(rows.size());
  }
  return mean;
}

// Every image of both folders, unpaired: only their features, for the set metrics.
FeatureSets evaluate_sets(const EvalArgs& args, Networks& n) {
  UD2M_CHECK(n.inception || n.feature_prior, "--unpaired compares sets of images: give --inception or --feature-prior");
  auto refs = images_by_stem(args.ref, "--ref"), preds = images_by_stem(args.pred, "--pred");
  FeatureSets sets;
  Progress progress("eval", static_cast<int>(refs.size() + preds.size()));
  for (auto [images, reference] : {std::pair{&refs, true}, std::pair{&preds, false}})
    for (auto& [stem, path] : *images) {
      add_features(n, read_image(path, 3), reference, sets);
      progress.step();
    }
  return sets;
}

// FID and KID (or FD and KID on the prior's features) of the restored or
// generated set against the reference set.
void add_set_metrics(const FeatureSets& sets, const metrics::KidOptions& kid_options, nlohmann::json& report) {
  for (auto& [name, rows] : sets) {
    const size_t n = std::min(rows.first.size(), rows.second.size());
    if (n < 2) {
      log::warn("FID and KID need at least 2 images per set; found {}", n);
      continue;
    }
    auto ref = torch::cat(rows.first), pred = torch::cat(rows.second);
    if (static_cast<int64_t>(n) < ref.size(1))
      log::warn("{} features: {} images, fewer than the {} feature dimensions, so the covariances are singular and "
                "the Fréchet distance is biased; compare values only at equal image counts", name, n, ref.size(1));
    const bool inception = name == "inception";
    auto kid = metrics::kernel_inception_distance(pred, ref, kid_options);
    report[inception ? "fid" : "fd_prior"] = metrics::frechet_distance(pred, ref);
    report[inception ? "kid" : "kid_prior"] = {
        {"mean", kid.mean}, {"std", kid.std}, {"subsets", kid.subsets}, {"subset_size", kid.subset_size}};
    report["set_sizes"] = {{"ref", rows.first.size()}, {"pred", rows.second.size()}};
  }
}

void print_set_metrics(const nlohmann::json& report) {
  for (auto [fd, kid, fd_label, kid_label] :
       {std::tuple{"fid", "kid", "FID", "KID"}, std::tuple{"fd_prior", "kid_prior", "FD-prior", "KID-prior"}}) {
    if (!report.contains(fd)) continue;
    fmt::print("{} {:.4f}   {} {:.6f} ± {:.6f} ({} subset(s) of {})\n", fd_label, report[fd].get<double>(), kid_label,
               report[kid]["mean"].get<double>(), report[kid]["std"].get<double>(), report[kid]["subsets"].get<int>(),
               report[kid]["subset_size"].get<int64_t>());
  }
}

// One row per image, then the means, then the set metrics.
void print_table(const nlohmann::json& report) {
  const auto& rows = report["images"];
  const bool lpips = report.contains("lpips_backbone");
  const std::string mean_label = fmt::format("mean ({})", rows.size());
  size_t width = mean_label.size();
  for (auto& r : rows) width = std::max(width, r["name"].get<std::string>().size());
  std::string header = fmt::format("{:<{}}  {:>9}  {:>7}", "image", width, "PSNR (dB)", "SSIM");
  if (lpips) header += fmt::format("  {:>13}", "LPIPS (" + report["lpips_backbone"].get<std::string>() + ")");
  fmt::print("{}\n", header);
  auto print_row = [&](const std::string& name, const nlohmann::json& r) {
    std::string line = fmt::format("{:<{}}  {:>9.3f}  {:>7.4f}", name, width, r["psnr"].get<double>(),
                                   r["ssim"].get<double>());
    if (lpips) line += fmt::format("  {:>13.4f}", r["lpips"].get<double>());
    fmt::print("{}\n", line);
  };
  for (auto& r : rows) print_row(r["name"].get<std::string>(), r);
  print_row(mean_label, report["mean"]);
}

void run_eval(const EvalArgs& args) {
  check_writable(args.json, "--json");
  nlohmann::json report = {{"ref", args.ref}, {"pred", args.pred}};
  if (args.unpaired) {
    auto networks = load_networks(args);
    add_set_metrics(evaluate_sets(args, networks), args.kid, report);
  } else {
    auto pairs = pair_images(args, report["unpaired"]);
    auto networks = load_networks(args);
    if (networks.lpips) report["lpips_backbone"] = nets::lpips_backbone_name((*networks.lpips)->backbone());
    auto per_image = evaluate_pairs(pairs, networks);
    report["images"] = per_image.rows;
    report["mean"] = means(per_image.rows);
    add_set_metrics(per_image.features, args.kid, report);
    print_table(report);
  }
  print_set_metrics(report);
  if (!args.json.empty()) {
    write_file_atomic(args.json, report.dump(2) + "\n");
    log::info("wrote '{}'", args.json);
  }
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  auto* cmd = app.add_subcommand(
      "eval", "Compare restored images with references, paired by file name: PSNR, SSIM (and LPIPS) per image "
              "and on average; FID and KID over the two sets.");
  cmd->add_option("--ref", args->ref, "Folder of reference (ground-truth) PNG/JPEG images")->required();
  cmd->add_option("--pred", args->pred, "Folder of restored images; each is paired with the reference of the same "
                  "name (extension aside)")->required();
  cmd->add_option("--lpips-weights", args->lpips_weights,
                  "LPIPS: the torchvision trunk (alexnet-owt-7be5be79.pth, vgg16-397923af.pth or "
                  "squeezenet1_1-b8a52dc0.pth) and the lpips package's linear heads (lpips/weights/v0.1/"
                  "{alex,vgg,squeeze}.pth) matching it")
      ->expected(2);
  cmd->add_option("--inception", args->inception,
                  "FID/KID: pytorch-fid's Inception weights, pt_inception-2015-12-05-6726825d.pth");
  cmd->add_option("--feature-prior", args->feature_prior,
                  "FD/KID without Inception weights: features from this ADM prior's encoder (per-channel mean and "
                  "std at each level, clean input), reported as FD-prior and KID-prior");
  cmd->add_flag("--unpaired", args->unpaired,
                "Compare the folders only as sets (e.g. generated images vs real ones): FID/KID or FD-prior/KID-prior, "
                "no per-image metrics");
  cmd->add_option("--json", args->json, "Also write every value to this JSON file");
  cmd->add_option("--kid-subsets", args->kid.subsets, "KID: random subsets averaged")->capture_default_str();
  cmd->add_option("--kid-subset-size", args->kid.subset_size, "KID: images per subset")->capture_default_str();
  cmd->add_option("--seed", args->kid.seed, "KID: seed of the subset draws")->capture_default_str();
  cmd->callback([args] { run_eval(*args); });
}

}  // namespace ud2m::cli
