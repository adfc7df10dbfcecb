//! Certificates for tests of TLS: a test CA, a server certificate for the
//! given loopback addresses and a client certificate, made with the
//! `openssl` command (installed by `scripts/install-test-deps.sh`).

use std::path::Path;
use std::process::Command;

/// Writes into `dir`: `ca.pem` (and its key), `server.pem` and `server.key`
/// for the IP addresses `ips`, `client.pem` and `client.key`.
///
/// The server certificate is good for client authentication too: etcd's
/// JSON gateway connects to etcd's own gRPC port with etcd's certificate.
pub fn make_certificates(dir: &Path, ips: &[&str]) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (scripts/install-test-deps.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let names: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\n",
            names.join(",")
        ),
    )
    .expect("server.ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("client.ext");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=anycast test CA",
    ]);
    for who in ["server", "client"] {
        let (key, csr, pem, ext) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
            format!("{who}.ext"),
        );
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={who}"),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
}
