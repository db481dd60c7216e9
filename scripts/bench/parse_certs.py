#!/usr/bin/env python3
"""What a user would write instead of `certctl scan`: walk a folder, parse every
certificate with the `cryptography` package and extract the fields certctl stores
(subject, issuer, serial, notBefore, notAfter, SANs, key type, SHA-256 fingerprint).
It stores nothing; one process, like a typical script.

Used by scripts/bench-compare (the `compare` benchmark). Prints one line:
`files=N certificates=M errors=E expiring_30d=X` so the benchmark can check that it did the
same work as certctl.

    python parse_certs.py DIR [DIR...]
"""

import datetime
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

EXTENSIONS = (".pem", ".crt", ".cer", ".cert", ".chain")


def key_type(cert):
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC-{key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA-{key.key_size}"
    return type(key).__name__


def sans(cert):
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in ext.value]


def extract(cert):
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "sans": sans(cert),
        "key": key_type(cert),
        "fingerprint_sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def main(roots):
    files = certs = errors = expiring = 0
    now = datetime.datetime.now(datetime.timezone.utc)
    horizon = now + datetime.timedelta(days=30)
    for root in roots:
        for folder, _dirs, names in os.walk(root):
            for name in names:
                if not name.lower().endswith(EXTENSIONS):
                    continue
                files += 1
                path = os.path.join(folder, name)
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                    parsed = (
                        x509.load_pem_x509_certificates(data)
                        if b"-----BEGIN" in data
                        else [x509.load_der_x509_certificate(data)]
                    )
                    for cert in parsed:
                        fields = extract(cert)
                        certs += 1
                        if now < fields["not_after"] <= horizon:
                            expiring += 1
                except (OSError, ValueError) as e:
                    errors += 1
                    print(f"error: {path}: {e}", file=sys.stderr)
    print(f"files={files} certificates={certs} errors={errors} expiring_30d={expiring}")
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: parse_certs.py DIR [DIR...]")
    sys.exit(main(sys.argv[1:]))
