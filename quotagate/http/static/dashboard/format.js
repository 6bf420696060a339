// Numbers for people: money with its currency, token counts with units, durations, times.
// The API sends money as exact decimal strings; they are turned into numbers here for display only.

const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
const whole = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

let currency = "USD";

export function setCurrency(code) {
  currency = (code || "usd").toUpperCase();
}

export function currencySymbol() {
  const parts = new Intl.NumberFormat(undefined, { style: "currency", currency }).formatToParts(0);
  return parts.find((p) => p.type === "currency")?.value ?? currency;
}

export function money(value) {
  const n = Number(value ?? 0);
  const abs = Math.abs(n);
  // Charges are exact to 10^-9 units: a single request often costs a fraction of a cent.
  const options =
    abs > 0 && abs < 0.01 ? { maximumSignificantDigits: 2 } : { minimumFractionDigits: 2, maximumFractionDigits: 2 };
  return new Intl.NumberFormat(undefined, { style: "currency", currency, ...options }).format(n);
}

// Axis labels: short, never more precise than a tick needs.
export function moneyShort(value) {
  const n = Number(value ?? 0);
  if (n !== 0 && Math.abs(n) < 1) return money(n);
  return new Intl.NumberFormat(undefined, {
    style: "currency",
    currency,
    notation: Math.abs(n) >= 10000 ? "compact" : "standard",
    maximumFractionDigits: Math.abs(n) >= 100 ? 0 : 2,
  }).format(n);
}

export function count(n) {
  return Math.abs(n ?? 0) >= 10000 ? compact.format(n) : whole.format(n ?? 0);
}

export function requests(n) {
  return `${count(n)} ${n === 1 ? "request" : "requests"}`;
}

export function latency(ms) {
  if (ms === null || ms === undefined) return "—";
  return ms < 1000 ? `${whole.format(ms)} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

export function percent(fraction) {
  if (!Number.isFinite(fraction)) return "—";
  const p = fraction * 100;
  return `${p > 0 && p < 1 ? p.toFixed(1) : Math.round(p)}%`;
}

const timeOfDay = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const dayAndTime = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
});
const dayOnly = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const hourOnly = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const utcDay = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });

export function when(iso) {
  if (!iso) return "never";
  const d = new Date(iso);
  const today = new Date().toDateString() === d.toDateString();
  return today ? timeOfDay.format(d) : dayAndTime.format(d);
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  if (s < 86400 * 30) return `${Math.floor(s / 86400)} d ago`;
  return dayOnly.format(new Date(iso));
}

// Chart axis labels: hourly buckets in local time, daily buckets are UTC days.
export function bucketLabel(iso, bucket) {
  const d = new Date(iso);
  return bucket === "day" ? utcDay.format(d) : hourOnly.format(d);
}

export function bucketTitle(iso, bucket) {
  const d = new Date(iso);
  return bucket === "day" ? `${utcDay.format(d)} (UTC day)` : dayAndTime.format(d);
}

export function reason(code) {
  return (code || "unknown").replaceAll("_", " ");
}

// A decimal amount a person typed -> integer cents, exactly: digits are split at the point, never passed
// through a binary float ("12.34" -> 1234; "1.005" is refused, it is not a whole number of cents).
// null: not an amount of at most two decimals.
export function parseCents(text) {
  const m = /^\s*(\d{0,9})(?:\.(\d{0,2}))?\s*$/.exec(text ?? "");
  if (!m || !`${m[1]}${m[2] ?? ""}`) return null;
  return Number(m[1] || "0") * 100 + Number((m[2] ?? "").padEnd(2, "0"));
}

// Integer nanos (10^-9 units) -> the exact decimal string, at least two decimals: 12_345_000_000 -> "12.345".
export function nanosToAmount(nanos) {
  const n = BigInt(nanos);
  const abs = n < 0n ? -n : n;
  const frac = (abs % 1000000000n).toString().padStart(9, "0").replace(/0+$/, "").padEnd(2, "0");
  return `${n < 0n ? "-" : ""}${abs / 1000000000n}.${frac}`;
}
