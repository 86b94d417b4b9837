#!/usr/bin/env node
// Compile contracts/*.sol with the npm `solc` (standard JSON) and write the artifacts the
// Python package loads: src/meterchain/chain/artifacts/<Name>.json and manifest.json.
//
// Usage: node contracts/build.mjs [--out DIR]
// The manifest records the sha256 of every source file and the exact compiler input settings,
// so tests can tell (without compiling) whether the committed artifacts are stale.

import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");

const contractsDir = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(contractsDir, "..");
const nodeModules = join(repoRoot, "node_modules");

// The settings every artifact is built with. Energy Web Chain predates Shanghai: "paris" keeps
// PUSH0, MCOPY and transient storage out of the bytecode. 20,000 optimizer runs: settlement
// loops run every interval, so runtime gas matters more than code size. viaIR saves ~3 % per
// trade but quadruples the compile time the freshness test pays (see docs/contracts.md), so the
// legacy pipeline is used.
export const SETTINGS = {
  evmVersion: "paris",
  optimizer: { enabled: true, runs: 20000 },
  viaIR: false,
  metadata: { bytecodeHash: "none" },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

function parseArgs(argv) {
  let out = join(repoRoot, "src", "meterchain", "chain", "artifacts");
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--out") {
      out = resolve(argv[++i]);
    } else {
      throw new Error(`unknown argument ${argv[i]}; usage: node contracts/build.mjs [--out DIR]`);
    }
  }
  return { out };
}

function sha256(text) {
  return createHash("sha256").update(text).digest("hex");
}

function findImports(path) {
  if (path.startsWith("@openzeppelin/")) {
    try {
      return { contents: readFileSync(join(nodeModules, path), "utf8") };
    } catch {
      return { error: `${path} not found under node_modules; run \`npm ci\`` };
    }
  }
  return { error: `cannot resolve import ${path}: only @openzeppelin/ imports are allowed` };
}

function main() {
  const { out } = parseArgs(process.argv.slice(2));
  const files = readdirSync(contractsDir)
    .filter((name) => name.endsWith(".sol"))
    .sort();
  if (files.length === 0) throw new Error(`no .sol files in ${contractsDir}`);

  const sources = {};
  const sourceHashes = {};
  for (const name of files) {
    const text = readFileSync(join(contractsDir, name), "utf8");
    sources[name] = { content: text };
    sourceHashes[name] = sha256(text);
  }

  const input = { language: "Solidity", sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors ?? []).filter((e) => e.severity === "error");
  for (const message of output.errors ?? []) {
    process.stderr.write(message.formattedMessage ?? message.message);
  }
  if (errors.length > 0) {
    process.stderr.write(`build failed: ${errors.length} error(s)\n`);
    process.exit(1);
  }

  mkdirSync(out, { recursive: true });
  const written = [];
  for (const name of files) {
    for (const [contractName, contract] of Object.entries(output.contracts[name] ?? {})) {
      const bytecode = contract.evm.bytecode.object;
      if (!bytecode) continue; // interfaces and abstract contracts
      const artifact = {
        contractName,
        sourceName: name,
        abi: contract.abi,
        bytecode: `0x${bytecode}`,
        deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
      };
      writeFileSync(join(out, `${contractName}.json`), `${JSON.stringify(artifact, null, 2)}\n`);
      written.push(contractName);
    }
  }

  const openzeppelin = JSON.parse(
    readFileSync(join(nodeModules, "@openzeppelin", "contracts", "package.json"), "utf8"),
  );
  const manifest = {
    compiler: { name: "solc", version: solc.version() },
    openzeppelin: openzeppelin.version,
    settings: SETTINGS,
    sources: sourceHashes,
    contracts: written.sort(),
  };
  writeFileSync(join(out, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
  process.stdout.write(`built ${written.join(", ")} with solc ${solc.version()} into ${out}\n`);
}

main();
