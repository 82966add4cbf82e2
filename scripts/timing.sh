# Timing helpers the benchmark scripts source.
#
#   stats FILE     "min/median/p90 ms" of the numbers in FILE (one per line, milliseconds)
#   median FILE    the median of the numbers in FILE
#   now_ms         the wall clock in milliseconds

stats() {
    sort -n "$1" | awk '{v[NR] = $1} END {
        p90 = int(NR * 0.9 + 0.5); if (p90 < 1) p90 = 1;
        printf "%.1f/%.1f/%.1f ms", v[1], v[int((NR + 1) / 2)], v[p90] }'
}
median() { sort -n "$1" | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
now_ms() { date +%s%N | awk '{printf "%.3f", $1 / 1e6}'; }
