using System.Runtime.InteropServices;

namespace Skiff.Bench.Cluster;

internal static class Machine
{
    public static string LoadAverage()
    {
        try { return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); }
        catch (IOException) { return "?"; }
    }

    private static string CpuModel()
    {
        try
        {
            var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"));
            return line?.Split(':', 2)[1].Trim() ?? "?";
        }
        catch (IOException) { return "?"; }
    }

    private static string MemoryGiB()
    {
        try
        {
            var line = File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal"));
            var kb = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
            return $"{kb / 1024.0 / 1024.0:F1} GiB";
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or FormatException) { return "?"; }
    }

    private static string Kernel()
    {
        try { return File.ReadAllText("/proc/sys/kernel/osrelease").Trim(); }
        catch (IOException) { return "?"; }
    }

    public static string Describe(string loadAtStart) =>
        $"{Environment.ProcessorCount} cores ({CpuModel()}), {MemoryGiB()} RAM, Linux {Kernel()}, " +
        $"{RuntimeInformation.FrameworkDescription}; load average at start {loadAtStart}";

    /// <summary>Member processes this harness starts (their command lines name its temp dir) that are still alive.</summary>
    public static List<string> LeftoverMembers()
    {
        var found = new List<string>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid) || pid == Environment.ProcessId) continue;
            try
            {
                var cmd = File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' ');
                if (cmd.Contains("skiff-bench-")) found.Add($"{pid}: {cmd[..Math.Min(80, cmd.Length)]}");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        return found;
    }
}
