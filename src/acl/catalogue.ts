/**
 * The commands ACL rules name, with Redis' categories: the upstream's command table (its
 * COMMAND reply lists each command's ACL categories), plus the commands the proxy answers
 * itself (RG.*, TFUNCTION, TFCALL...), which form the `gears` category.
 */

/** One command as ACL rules see it; a container (CONFIG, ACL...) holds its subcommands. */
export interface AclCommandSource {
  name: string;
  /** Redis' arity: N exactly, or -N at least N (the name counted). */
  arity: number;
  categories: readonly string[];
  subcommands: ReadonlyMap<string, AclCommandSource>;
}

/** ACL CAT's list, in Redis 7.0's order, then the proxy's own. */
export const CATEGORIES = [
  "keyspace",
  "read",
  "write",
  "set",
  "sortedset",
  "list",
  "hash",
  "string",
  "bitmap",
  "hyperloglog",
  "geo",
  "stream",
  "pubsub",
  "admin",
  "fast",
  "slow",
  "blocking",
  "dangerous",
  "connection",
  "transaction",
  "scripting",
  "gears",
];

interface Entry {
  /** Leaf names: the command itself, or `container|sub` for each subcommand. */
  leaves: string[];
}

export class AclCatalogue {
  /** Top-level command name -> its leaves. */
  private readonly commands = new Map<string, Entry>();
  /** Leaf name -> its categories. */
  private readonly leafCategories = new Map<string, readonly string[]>();
  /** Containers: top-level names whose permissions are given per subcommand. */
  private readonly containers = new Set<string>();
  private readonly arities = new Map<string, number>();

  constructor(upstream: Iterable<AclCommandSource>, gearsCommands: readonly string[]) {
    for (const command of upstream) {
      this.arities.set(command.name, command.arity);
      if (command.subcommands.size === 0) this.add(command.name, command.categories);
      else {
        this.containers.add(command.name);
        const leaves: string[] = [];
        for (const [sub, info] of command.subcommands) {
          const leaf = `${command.name}|${sub}`;
          leaves.push(leaf);
          this.leafCategories.set(leaf, info.categories);
        }
        this.commands.set(command.name, { leaves });
      }
    }
    for (const name of gearsCommands) this.add(name, ["gears"]);
  }

  private add(name: string, categories: readonly string[]): void {
    this.commands.set(name, { leaves: [name] });
    this.leafCategories.set(name, categories);
  }

  /** The command's arity; -1 (any) for the proxy's own. */
  arity(name: string): number {
    return this.arities.get(name) ?? -1;
  }

  isContainer(name: string): boolean {
    return this.containers.has(name);
  }

  /** The leaves `rule` names: a command, `container|sub`, or a `prefix*` (the proxy's extension). */
  leavesOf(rule: string): string[] | null {
    if (rule.endsWith("*")) {
      const prefix = rule.slice(0, -1);
      const leaves = [...this.commands.keys()]
        .filter((n) => n.startsWith(prefix))
        .flatMap((n) => this.commands.get(n)!.leaves);
      return leaves.length > 0 ? leaves : null;
    }
    if (rule.includes("|")) return this.leafCategories.has(rule) ? [rule] : null;
    return this.commands.get(rule)?.leaves ?? null;
  }

  /** Whether Redis (or the proxy) knows this command or `container|sub`. */
  isKnown(leafOrCommand: string): boolean {
    return this.commands.has(leafOrCommand) || this.leafCategories.has(leafOrCommand);
  }

  /** Every leaf of a category, in no particular order. */
  category(name: string): string[] {
    const out: string[] = [];
    for (const [leaf, categories] of this.leafCategories) if (categories.includes(name)) out.push(leaf);
    return out;
  }

  allLeaves(): IterableIterator<string> {
    return this.leafCategories.keys();
  }

  /** Top-level names whose every leaf is in `allowed` (the hot path's one lookup). */
  wholeCommands(allowed: ReadonlySet<string>): Set<string> {
    const out = new Set<string>();
    for (const [name, entry] of this.commands) if (entry.leaves.every((l) => allowed.has(l))) out.add(name);
    return out;
  }
}
