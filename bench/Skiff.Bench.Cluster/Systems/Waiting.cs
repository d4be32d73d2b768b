namespace Skiff.Bench.Cluster.Systems;

internal static class Waiting
{
    /// <summary>Retries until the check returns true; a check that throws counts as not yet.</summary>
    public static async Task UntilAsync(Func<Task<bool>> check, TimeSpan timeout, string what, CancellationToken ct)
    {
        var until = DateTime.UtcNow + timeout;
        Exception? last = null;
        while (DateTime.UtcNow < until)
        {
            ct.ThrowIfCancellationRequested();
            try
            {
                if (await check()) return;
            }
            catch (InvalidOperationException e) when (e.Message.Contains("exited")) { throw; }
            catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested) { last = e; }
            await Task.Delay(50, ct);
        }
        throw new TimeoutException($"timed out after {timeout.TotalSeconds:0} s waiting for {what}: {last?.Message}");
    }

    public static void DeleteQuietly(string dir)
    {
        try { if (dir.Length > 0 && Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
