#!/bin/sh
# Writes a starting corpus for the read_certificates fuzz target (made on the spot with the
# openssl command line, nothing pasted): fuzz/corpus/read_certificates/.
# Each file is one selector byte (file name and PFX password, see the target) + a valid file.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/corpus/read_certificates"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
    -out ca.pem -subj "/CN=Fuzz CA" -days 30 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key \
    -out leaf.csr -subj "/CN=leaf.fuzz.example" 2>/dev/null
printf 'subjectAltName=DNS:leaf.fuzz.example,IP:192.0.2.7,email:a@fuzz.example\n' > ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -set_serial 0x7fffffffffffffffffffffffffffffffffffffff \
    -days 30 -extfile ext -out leaf.pem 2>/dev/null
openssl x509 -in leaf.pem -outform DER -out leaf.der
openssl x509 -in ca.pem -outform DER -out ca.der
openssl pkcs12 -export -in leaf.pem -inkey leaf.key -certfile ca.pem -passout pass:fuzz-pw -out site.pfx
openssl pkcs12 -export -legacy -in leaf.pem -inkey leaf.key -passout pass:fuzz-pw -out legacy.pfx 2>/dev/null \
    || cp site.pfx legacy.pfx

seed() { # seed NAME SELECTOR FILE...
    name=$1 sel=$2
    shift 2
    printf "\\$(printf '%03o' "$sel")" > "$out/$name"
    cat "$@" >> "$out/$name"
}
# Selector: name = in.pem in.der in.pfx in.crt (sel % 4), password = none, fuzz-pw, NUL (sel / 4 % 3).
cat leaf.pem leaf.key ca.pem > bundle.pem
seed bundle.pem 0 bundle.pem
seed leaf.der 1 leaf.der
cat leaf.der ca.der > two.der
seed two.der 3 two.der
seed site.pfx 6 site.pfx
seed legacy.pfx 6 legacy.pfx
openssl base64 -in site.pfx -out site.b64
seed site.b64.pfx 6 site.b64
echo "wrote $(ls "$out" | wc -l) seeds to $out"
