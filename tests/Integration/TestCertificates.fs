/// Certificates made inside the tests (System.Security.Cryptography, ECDSA P-256), written as PEM files.
module Skiff.Integration.TestCertificates

open System
open System.IO
open System.Net
open System.Security.Cryptography
open System.Security.Cryptography.X509Certificates

/// A certificate authority: its certificate (with key) and where its PEM file is.
type Authority = { Certificate: X509Certificate2; File: string }

/// A certificate and key as PEM files.
type PemPair = { CertFile: string; KeyFile: string; Certificate: X509Certificate2 }

let private writePair (dir: string) (name: string) (cert: X509Certificate2) (key: ECDsa) =
    let certFile = Path.Combine(dir, name + ".pem")
    let keyFile = Path.Combine(dir, name + "-key.pem")
    File.WriteAllText(certFile, cert.ExportCertificatePem())
    File.WriteAllText(keyFile, key.ExportPkcs8PrivateKeyPem())
    { CertFile = certFile; KeyFile = keyFile; Certificate = cert }

/// A new CA named `name`, its certificate written to DIR/name.pem.
let authority (dir: string) (name: string) =
    use key = ECDsa.Create(ECCurve.NamedCurves.nistP256)
    let request = CertificateRequest("CN=" + name, key, HashAlgorithmName.SHA256)
    request.CertificateExtensions.Add(X509BasicConstraintsExtension(true, false, 0, true))
    request.CertificateExtensions.Add(X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign ||| X509KeyUsageFlags.CrlSign, true))
    let cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes -5.0, DateTimeOffset.UtcNow.AddDays 30.0)
    let file = Path.Combine(dir, name + ".pem")
    File.WriteAllText(file, cert.ExportCertificatePem())
    { Certificate = cert; File = file }

/// A certificate signed by `ca` for `name`, naming `hosts` (IP addresses or DNS names) in its SANs (none for a client),
/// written to DIR/name.pem and DIR/name-key.pem.
let issue (ca: Authority) (dir: string) (name: string) (hosts: string list) =
    let key = ECDsa.Create(ECCurve.NamedCurves.nistP256)
    let request = CertificateRequest("CN=" + name, key, HashAlgorithmName.SHA256)
    if not hosts.IsEmpty then
        let san = SubjectAlternativeNameBuilder()
        for host in hosts do
            match IPAddress.TryParse host with
            | true, ip -> san.AddIpAddress(nonNull ip)
            | _ -> san.AddDnsName host
        request.CertificateExtensions.Add(san.Build())
    let usages = OidCollection()
    usages.Add(Oid "1.3.6.1.5.5.7.3.1") |> ignore // server authentication
    usages.Add(Oid "1.3.6.1.5.5.7.3.2") |> ignore // client authentication
    request.CertificateExtensions.Add(X509EnhancedKeyUsageExtension(usages, false))
    let serial = Array.zeroCreate<byte> 12
    RandomNumberGenerator.Fill(Span serial)
    use signed =
        request.Create(ca.Certificate, DateTimeOffset.UtcNow.AddMinutes -1.0, DateTimeOffset.UtcNow.AddDays 10.0, serial)
    writePair dir name (signed.CopyWithPrivateKey key) key

/// A fresh directory for one test's certificates.
let directory () =
    let d = Path.Combine(Path.GetTempPath(), "skiff-certs-" + Guid.NewGuid().ToString("N"))
    Directory.CreateDirectory d |> ignore
    d
