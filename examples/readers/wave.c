/* Example reader program in C: the same synthetic magnetometer as wave.py (see its
 * docstring for the formula), written as CSV without a header: time as ISO 8601 UTC
 * text, then bx, by, bz.
 *
 *     cc -O2 -o wave wave.c -lm
 *     ./wave 2020-01-01T00:00:00Z 2020-01-02T00:00:00Z
 *
 * Values are exact binary fractions printed with %.17g, so they read back exactly.
 * Errors go to stderr with exit status 2.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double FILL = -1e31;

/* The floor modulo: never negative for b > 0. */
static long long fmodll(long long a, long long b) {
    long long m = a % b;
    return m < 0 ? m + b : m;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant, days_from_civil). */
static long long days_from_civil(long long y, int m, int d) {
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The date of a day since 1970-01-01 (H. Hinnant, civil_from_days). */
static void civil_from_days(long long z, long long *y, int *m, int *d) {
    z += 719468;
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    long long doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* Seconds since 1970 of YYYY-MM-DDTHH:MM:SS[.fff]Z, rounded up to a whole second. */
static int parse_time(const char *text, long long *out) {
    int y, mo, d, h, mi, n = 0;
    double s;
    if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%lf%n", &y, &mo, &d, &h, &mi, &s, &n) != 6)
        return -1;
    if (strcmp(text + n, "Z") != 0 || mo < 1 || mo > 12 || d < 1 || d > 31 || s < 0)
        return -1;
    *out = days_from_civil(y, mo, d) * 86400 + h * 3600LL + mi * 60LL + (long long)ceil(s);
    return 0;
}

static void write_row(long long t) {
    double bx = (llabs(fmodll(t, 600) - 300) - 150) / 4.0;
    double by = (llabs(fmodll(t, 86400) - 43200) - 21600) / 512.0;
    double bz = fmodll(t * 7919, 10007) / 64.0 - 78.1875;
    if (fmodll(t, 97) == 0) bx = FILL;
    if (fmodll(t, 89) == 0) by = FILL;
    if (fmodll(t, 1009) == 0) bz = FILL;
    long long day = t >= 0 ? t / 86400 : (t - 86399) / 86400, y;
    long long sec = t - day * 86400;
    int m, d;
    civil_from_days(day, &y, &m, &d);
    printf("%04lld-%02d-%02dT%02lld:%02lld:%02lldZ,%.17g,%.17g,%.17g\n", y, m, d, sec / 3600,
           sec / 60 % 60, sec % 60, bx, by, bz);
}

int main(int argc, char **argv) {
    long long first, end;
    if (argc != 3) {
        fprintf(stderr, "usage: %s START STOP (ISO 8601 UTC, e.g. 2020-01-01T00:00:00Z)\n",
                argv[0]);
        return 2;
    }
    if (parse_time(argv[1], &first) || parse_time(argv[2], &end)) {
        fprintf(stderr, "wave: not an ISO 8601 UTC time: %s or %s\n", argv[1], argv[2]);
        return 2;
    }
    for (long long t = first; t < end; t++) {
        long long phase = fmodll(t, 3600);
        if (phase < 600 || phase >= 660) write_row(t);
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
