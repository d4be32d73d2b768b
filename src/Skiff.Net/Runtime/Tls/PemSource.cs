using System.Security.Cryptography.X509Certificates;

namespace Skiff.Net.Runtime.Tls;

/// <summary>
/// PEM files read again when they change, so certificates can be rotated without a restart: the files' write times
/// are looked at no more than once a second, and a change that does not load (a rotation caught half-written) keeps
/// the previous contents until the next look. The first load must succeed.
/// </summary>
internal sealed class PemSource<T> where T : class
{
    private static readonly TimeSpan LookEvery = TimeSpan.FromSeconds(1);
    private readonly string[] _files;
    private readonly Func<T> _load;
    private readonly object _gate = new();
    private T _current;
    private DateTime[] _stamps;
    private long _nextLook;

    public PemSource(Func<T> load, params string[] files)
    {
        _files = files;
        _load = load;
        _stamps = Stamps();
        try { _current = load(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException or ArgumentException)
        {
            throw new SkiffException(ErrorKind.InvalidArgument, $"cannot read {string.Join(" and ", files)}: {e.Message}", e);
        }
        _nextLook = Environment.TickCount64 + (long)LookEvery.TotalMilliseconds;
    }

    /// <summary>The files' contents as last loaded, reloaded first if they changed.</summary>
    public T Current
    {
        get
        {
            if (Environment.TickCount64 < Volatile.Read(ref _nextLook)) return Volatile.Read(ref _current);
            lock (_gate)
            {
                _nextLook = Environment.TickCount64 + (long)LookEvery.TotalMilliseconds;
                var stamps = Stamps();
                if (stamps.SequenceEqual(_stamps)) return _current;
                try
                {
                    Volatile.Write(ref _current, _load());
                    _stamps = stamps;
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException or ArgumentException)
                {
                    // Half-written: keep what works; the next look tries again.
                }
                return _current;
            }
        }
    }

    private DateTime[] Stamps() => _files.Select(File.GetLastWriteTimeUtc).ToArray();
}

/// <summary>The PEM sources TLS uses.</summary>
internal static class Pem
{
    /// <summary>A certificate with its private key, from a PEM certificate file and a PEM key file.</summary>
    public static PemSource<X509Certificate2> Certificate(string certFile, string keyFile) =>
        new(() => X509Certificate2.CreateFromPemFile(certFile, keyFile), certFile, keyFile);

    /// <summary>Trusted CA certificates, from one PEM file holding one or more.</summary>
    public static PemSource<X509Certificate2Collection> Trust(string caFile) =>
        new(() =>
        {
            var roots = new X509Certificate2Collection();
            roots.ImportFromPemFile(caFile);
            return roots.Count > 0 ? roots : throw new ArgumentException($"{caFile} holds no certificate");
        }, caFile);
}
