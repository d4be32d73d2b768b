using Microsoft.FSharp.Core;
using Skiff.Core;

namespace Skiff.Net.Storage;

/// <summary>
/// Applies one key-value <see cref="Command"/> to the data: the store and its ordered key index together, and says
/// what changed. Session bookkeeping, the change history and the applied index are the state machine's. Keys in the
/// reserved namespace are left untouched. Not thread-safe: the state machine serialises access under its lock.
/// </summary>
internal sealed class KvCommandApplier(FasterKvStore store, KeyIndex index)
{
    // A compare-and-swap's two results, shared rather than made per command.
    private static readonly CommandResult Swapped = CommandResult.NewSwapped(true), NotSwapped = CommandResult.NewSwapped(false);

    private long _entryIndex;
    private FSharpFunc<Command, CommandResult>? _function;

    /// <summary>The change the function <see cref="For"/> returned made when last called, or null (no change, or not
    /// called since).</summary>
    public Change? LastChange { get; private set; }

    /// <summary><see cref="Apply"/> as the function the session layer calls, for the entry at
    /// <paramref name="entryIndex"/>; what it changed is then <see cref="LastChange"/>. One function, reused: a
    /// closure made per write was a few more objects per write on every member.</summary>
    public FSharpFunc<Command, CommandResult> For(long entryIndex)
    {
        _entryIndex = entryIndex;
        LastChange = null;
        return _function ??= FuncConvert.FromFunc<Command, CommandResult>(c =>
        {
            var result = Apply(_entryIndex, c, out var change);
            LastChange = change;
            return result;
        });
    }

    /// <summary>Applies <paramref name="command"/>, made by the entry at <paramref name="entryIndex"/>.</summary>
    /// <param name="entryIndex">The entry's index, for the change.</param>
    /// <param name="command">The command.</param>
    /// <param name="change">A put, a delete of a key that existed, or a compare-and-swap that matched and changed
    /// something; null otherwise.</param>
    /// <returns>The command's result.</returns>
    public CommandResult Apply(long entryIndex, Command command, out Change? change)
    {
        change = null;
        switch (command)
        {
            case Command.Insert p when !KvStateMachine.IsReserved(p.key):
                Put(p.key, p.value);
                change = Change.Inserted(entryIndex, p.key, p.value);
                return CommandResult.Done;
            case Command.Remove d when !KvStateMachine.IsReserved(d.key):
                if (Delete(d.key)) change = Change.Removed(entryIndex, d.key);
                return CommandResult.Done;
            case Command.CompareAndSwap c when !KvStateMachine.IsReserved(c.key):
                return CompareAndSwap(entryIndex, c.key, c.expected, c.next, out change);
            case Command.CompareAndSwap:
                return NotSwapped;
            default:
                return CommandResult.Done;
        }
    }

    private void Put(string key, byte[] value)
    {
        store.Upsert(key, value);
        index.Add(key);
    }

    /// <summary>Deletes a key; true if it existed (the key index knows every live key).</summary>
    private bool Delete(string key)
    {
        store.Delete(key);
        return index.Remove(key);
    }

    private CommandResult CompareAndSwap(long entryIndex, string key, FSharpOption<byte[]>? expected,
        FSharpOption<byte[]>? next, out Change? change)
    {
        change = null;
        var current = store.Read(key);
        var want = expected?.Value;
        bool match = want is null ? current is null : current is not null && current.AsSpan().SequenceEqual(want);
        if (!match) return NotSwapped;
        if (next?.Value is { } n)
        {
            Put(key, n);
            change = Change.Inserted(entryIndex, key, n);
        }
        else if (Delete(key)) change = Change.Removed(entryIndex, key);
        return Swapped;
    }
}
