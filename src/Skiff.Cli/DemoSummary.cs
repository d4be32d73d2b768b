namespace Skiff.Cli;

/// <summary>The measured results, printed at the end.</summary>
internal sealed class DemoSummary
{
    public int Port;
    public int Writes;
    public int Watched;
    public int Victim;
    public long FailoverMs;
    public string NewLeader = "";
    public long NewTerm;
    public long RejoinMs;
    public int Intact;
    public int Expected;

    public void Print(string cleanup, TimeSpan total)
    {
        Console.WriteLine();
        Console.WriteLine("Summary");
        Console.WriteLine($"  cluster: 3 'skiff serve' processes on 127.0.0.1-3, port {Port}");
        Console.WriteLine($"  writes and reads through different nodes: {Writes} keys, all read back");
        Console.WriteLine($"  watch: {Watched} changes received on node 3");
        Console.WriteLine($"  leader node {Victim} killed with SIGKILL: writes accepted again after {FailoverMs} ms (new leader {NewLeader}, term {NewTerm})");
        Console.WriteLine($"  node {Victim} restarted: rejoined and caught up in {RejoinMs} ms, data intact ({Intact}/{Expected} keys)");
        Console.WriteLine($"  {cleanup}");
        Console.WriteLine($"demo finished in {total.TotalSeconds:0.0} s");
    }
}
