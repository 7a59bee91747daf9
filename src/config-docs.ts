/**
 * The README's options table, made from the option definitions (src/config-file.ts), so the
 * two cannot drift: scripts/options-table.mjs writes it, spec/docs.spec.ts checks it.
 */
import { CONFIG_OPTION_DESCRIBE, OPTIONS, type OptionSpec } from "./config-file.js";

/** One row of the table: the option as typed, its default, what it does. */
export type OptionRow = [option: string, defaultText: string, meaning: string];

const PLACEHOLDER: Partial<Record<OptionSpec["kind"], string>> = {
  port: "<port>",
  "listen-port": "<port>",
  "plain-port": "<port>|off",
  host: "<host>",
  text: "<text>",
  count: "<n>",
  positive: "<n>",
  size: "<size>",
  level: "<level>",
  upstreams: "<host:port>",
  settings: "<Name=Value>",
};

function optionText(spec: OptionSpec): string {
  const value =
    spec.choices !== undefined
      ? spec.choices.join("|")
      : spec.flag.endsWith("-file")
        ? "<file>"
        : PLACEHOLDER[spec.kind];
  return value === undefined ? `--${spec.flag}` : `--${spec.flag} ${value}`;
}

/** Every option, --config first, in the order of the definitions. */
export function optionRows(): OptionRow[] {
  const config: OptionRow = ["--config <file>", "none", CONFIG_OPTION_DESCRIBE];
  return [
    config,
    ...OPTIONS.map((spec): OptionRow => [optionText(spec), spec.defaultText ?? "none", spec.describe]),
  ];
}

/** The Markdown table (prettier aligns its columns when the README is formatted). */
export function optionsTable(): string {
  const cell = (text: string): string => text.replace(/\|/g, "\\|");
  const lines = ["| Option | Default | Meaning |", "| --- | --- | --- |"];
  for (const [option, defaultText, meaning] of optionRows()) {
    lines.push(`| \`${cell(option)}\` | ${cell(defaultText)} | ${cell(meaning)} |`);
  }
  return lines.join("\n");
}

/** Reads the rows back from a Markdown table (cells trimmed, escapes and code quotes removed). */
export function parseTableRows(markdown: string): OptionRow[] {
  return markdown
    .split("\n")
    .filter((line) => line.startsWith("|") && !/^\|\s*(Option|-{3,})/.test(line))
    .map((line) => {
      const cells = line
        .slice(1, line.lastIndexOf("|"))
        .split(/(?<!\\)\|/)
        .map((c) => c.trim().replace(/\\\|/g, "|"));
      return [cells[0].replace(/^`|`$/g, ""), cells[1], cells[2]] as OptionRow;
    });
}
