# Shared by the bundle scripts (sourced): first_records DATA OUT LIMIT writes the first LIMIT
# lines of the gzipped JSON-lines DATA to OUT.
first_records() {
  "$PYTHON" - "$1" "$2" "$3" <<'PY'
import gzip, itertools, sys
with gzip.open(sys.argv[1], "rt") as src, open(sys.argv[2], "w") as dst:
    dst.writelines(itertools.islice(src, int(sys.argv[3])))
PY
}
