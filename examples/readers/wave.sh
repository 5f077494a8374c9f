#!/bin/sh
# Example reader program in POSIX shell and awk: the same synthetic magnetometer as
# wave.py (see its docstring for the formula), written as CSV with a header and the time
# as whole seconds since 1970-01-01 (the description says `time_units`).
#
#   sh wave.sh --start=2020-01-01T00:00:00Z --stop=2020-01-01T01:00:00Z [--label=TEXT]
#
# Values are exact binary fractions printed with %.17g, so they read back exactly; the
# fill -1e31 prints as -9.9999999999999996e+30, which is the same double. It is slower
# than wave.py (awk prints every row): fine for hours or days, not for years.
#
# `--label` is free text that is only echoed on stderr: it shows that a value reaching a
# shell script as an argument stays one argument as long as the script quotes "$label".
set -eu

start= stop= label=
for arg in "$@"; do
    case $arg in
        --start=*) start=${arg#--start=} ;;
        --stop=*) stop=${arg#--stop=} ;;
        --label=*) label=${arg#--label=} ;;
        *) printf 'wave.sh: unknown argument %s\n' "$arg" >&2; exit 2 ;;
    esac
done
if [ -z "$start" ] || [ -z "$stop" ]; then
    echo 'wave.sh: --start=ISO8601 and --stop=ISO8601 are required' >&2
    exit 2
fi
if [ -n "$label" ]; then
    printf 'wave.sh: label %s\n' "$label" >&2
fi

START=$start STOP=$stop exec awk 'BEGIN {
    first = epoch(ENVIRON["START"], 1)
    end = epoch(ENVIRON["STOP"], 1)
    print "time,bx,by,bz"
    for (t = first; t < end; t++) {
        phase = fmod(t, 3600)
        if (phase >= 600 && phase < 660) continue
        bx = (abs(fmod(t, 600) - 300) - 150) / 4
        by = (abs(fmod(t, 86400) - 43200) - 21600) / 512
        bz = fmod(t * 7919, 10007) / 64 - 78.1875
        if (fmod(t, 97) == 0) bx = -1e31
        if (fmod(t, 89) == 0) by = -1e31
        if (fmod(t, 1009) == 0) bz = -1e31
        printf "%.0f,%.17g,%.17g,%.17g\n", t, bx, by, bz
    }
}
function abs(x) { return x < 0 ? -x : x }
function fmod(a, b,    m) { m = a % b; return m < 0 ? m + b : m }
# Seconds since 1970 of YYYY-MM-DDTHH:MM:SS[.fff]Z, rounded up to a whole second.
function epoch(text, up,    p, y, mo, d, h, mi, s, whole) {
    if (text !~ /^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9](\.[0-9]+)?Z$/) {
        printf "wave.sh: not an ISO 8601 UTC time: %s\n", text > "/dev/stderr"
        exit 2
    }
    split(text, p, /[-T:Z]/)
    y = p[1] + 0; mo = p[2] + 0; d = p[3] + 0; h = p[4] + 0; mi = p[5] + 0; s = p[6] + 0
    whole = int(s)
    return days(y, mo, d) * 86400 + h * 3600 + mi * 60 + whole + (s > whole ? 1 : 0)
}
# Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant, days_from_civil).
function days(y, m, d,    era, yoe, doy, doe) {
    y -= (m <= 2)
    era = int((y >= 0 ? y : y - 399) / 400)
    yoe = y - era * 400
    doy = int((153 * (m > 2 ? m - 3 : m + 9) + 2) / 5) + d - 1
    doe = yoe * 365 + int(yoe / 4) - int(yoe / 100) + doy
    return era * 146097 + doe - 719468
}'
