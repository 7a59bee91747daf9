/** T&F's rule for library, function and trigger names; shared by the guest and the host. */

/** The empty name, or the first character T&F does not allow in a name; null when the name is fine. */
export function nameError(kind: string, name: string): string | null {
  if (name === "") return "Empty name is not allowed";
  for (const c of name) {
    if (!/^[A-Za-z0-9_]$/.test(c))
      return `Unallowed ${kind} name '${name}', Unallowed char was given '${c}'.`;
  }
  return null;
}
