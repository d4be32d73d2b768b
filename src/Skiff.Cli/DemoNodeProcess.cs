using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;

namespace Skiff.Cli;

/// <summary>A <c>skiff serve</c> child process: node <see cref="Number"/> on 127.0.0.N.</summary>
internal sealed class DemoNodeProcess(int number, int port, string dir, string? join)
{
    private readonly ConcurrentQueue<string> _tail = new();
    private Process? _process;

    public int Number { get; } = number;
    public IPAddress Address { get; } = IPAddress.Parse($"127.0.0.{number}");
    public int Pid => _process?.Id ?? 0;

    public void Start()
    {
        var (file, prefix) = SelfCommand();
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in prefix) psi.ArgumentList.Add(a);
        foreach (var a in new[] { "serve", "--dir", dir, "--bind", Address.ToString(), "--port", port.ToString(), "--parent-pid", Environment.ProcessId.ToString() })
            psi.ArgumentList.Add(a);
        if (join is not null)
        {
            psi.ArgumentList.Add("--join");
            psi.ArgumentList.Add(join);
        }
        else psi.ArgumentList.Add("--new-cluster"); // node 1 founds the demo's cluster (ignored on its restarts)
        var p = new Process { StartInfo = psi, EnableRaisingEvents = true };
        p.OutputDataReceived += (_, e) => Keep(e.Data);
        p.ErrorDataReceived += (_, e) => Keep(e.Data);
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        _process?.Dispose();
        _process = p;
    }

    private void Keep(string? line)
    {
        if (line is null) return;
        _tail.Enqueue(line);
        while (_tail.Count > 30) _tail.TryDequeue(out _);
    }

    /// <summary>SIGKILL, as a crash would.</summary>
    public void Kill()
    {
        try
        {
            if (_process is { HasExited: false } p)
            {
                p.Kill();
                p.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException) { }
    }

    /// <summary>SIGTERM and a clean shutdown; SIGKILL after 5 s. True once the process is gone.</summary>
    public async Task<bool> StopAsync()
    {
        if (_process is not { } p) return true;
        try
        {
            if (!p.HasExited)
            {
                if (!OperatingSystem.IsWindows()) Terminate(p.Id);
                else p.Kill();
                using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                try { await p.WaitForExitAsync(grace.Token); }
                catch (OperationCanceledException) { p.Kill(); p.WaitForExit(5000); }
            }
            return p.HasExited;
        }
        catch (InvalidOperationException) { return true; }
    }

    public void DumpTail(TextWriter to)
    {
        foreach (var line in _tail) to.WriteLine($"  node {Number}: {line}");
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int SysKill(int pid, int signal);

    private static void Terminate(int pid) => SysKill(pid, 15);

    /// <summary>How to start this same program again: the apphost, or <c>dotnet Skiff.Cli.dll</c>.</summary>
    private static (string File, string[] Prefix) SelfCommand()
    {
        var path = Environment.ProcessPath ?? throw new CliException(Exit.Internal, "cannot tell which program this is");
        return Path.GetFileNameWithoutExtension(path).Equals("dotnet", StringComparison.OrdinalIgnoreCase)
            ? (path, new[] { typeof(Demo).Assembly.Location })
            : (path, Array.Empty<string>());
    }
}
