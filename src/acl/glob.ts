/**
 * Redis' glob matching (util.c stringmatchlen, case-sensitive): `*`, `?`, `[abc]`, `[^a]`,
 * `[a-z]` and `\` escapes. Hand-written because ACL key and channel patterns must match
 * exactly as the server matches them, which the usual glob libraries (path-oriented, with
 * `**` and brace rules) do not.
 */
export function globMatch(pattern: string, text: string): boolean {
  return matchAt(pattern, 0, text, 0);
}

function matchAt(p: string, pi: number, s: string, si: number): boolean {
  while (pi < p.length) {
    const c = p[pi];
    if (c === "*") {
      while (p[pi + 1] === "*") pi++;
      if (pi + 1 === p.length) return true;
      for (let k = si; k <= s.length; k++) if (matchAt(p, pi + 1, s, k)) return true;
      return false;
    }
    if (si >= s.length) return false;
    if (c === "?") {
      pi++;
      si++;
      continue;
    }
    if (c === "[") {
      const end = classEnd(p, pi);
      if (!classMatches(p.slice(pi + 1, end), s[si])) return false;
      pi = end + 1;
      si++;
      continue;
    }
    const literal = c === "\\" && pi + 1 < p.length ? p[++pi] : c;
    if (literal !== s[si]) return false;
    pi++;
    si++;
  }
  return si === s.length;
}

/** Index of the `]` closing the class that opens at `open` (or the pattern's last index). */
function classEnd(p: string, open: number): number {
  let i = open + 1;
  if (p[i] === "^") i++;
  for (; i < p.length; i++) {
    if (p[i] === "\\") i++;
    else if (p[i] === "]") return i;
  }
  return p.length - 1;
}

function classMatches(body: string, ch: string): boolean {
  let not = false;
  let i = 0;
  if (body[0] === "^") {
    not = true;
    i = 1;
  }
  let match = false;
  for (; i < body.length; i++) {
    if (body[i] === "\\" && i + 1 < body.length) {
      if (body[++i] === ch) match = true;
    } else if (body[i + 1] === "-" && i + 2 < body.length) {
      let lo = body[i];
      let hi = body[i + 2];
      if (lo > hi) [lo, hi] = [hi, lo];
      if (ch >= lo && ch <= hi) match = true;
      i += 2;
    } else if (body[i] === ch) match = true;
  }
  return not ? !match : match;
}
