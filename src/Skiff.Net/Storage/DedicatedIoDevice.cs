using System.Collections.Concurrent;
using FASTER.core;
using Microsoft.Win32.SafeHandles;

namespace Skiff.Net.Storage;

/// <summary>
/// A segmented file device for FASTER (files <c>{name}.{segment}</c>) whose reads and writes run on
/// <see cref="DeviceIoThreads"/> instead of the .NET thread pool (see there for why). Otherwise it behaves as
/// FASTER's own local device on Linux: files opened with <see cref="FileOptions.WriteThrough"/> (<c>O_SYNC</c>), so a
/// write is durable when it completes, and read through the page cache (FASTER's no-buffering flag opens them the same
/// way on Linux: strace shows <c>O_SYNC</c> alone); I/O is sector-aligned by FASTER.
/// </summary>
internal sealed class DedicatedIoDevice : StorageDeviceBase
{
    private readonly ConcurrentDictionary<int, SafeFileHandle> _segments = new();
    private readonly DeviceIoThreads _io;
    private volatile bool _disposed;

    /// <summary>A device writing <c>{filename}.{segment}</c> files (the directory is created if missing).</summary>
    /// <param name="filename">The files' path without the segment number.</param>
    /// <param name="io">The threads its I/O runs on.</param>
    public DedicatedIoDevice(string filename, DeviceIoThreads io)
        : base(filename, 512, Devices.CAPACITY_UNSPECIFIED)
    {
        _io = io;
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(filename))!);
    }

    /// <summary>Never throttled: the queue of each I/O thread holds what FASTER issues.</summary>
    public override bool Throttle() => false;

    private SafeFileHandle Segment(int segment)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _segments.GetOrAdd(segment, s => File.OpenHandle(GetSegmentFilename(FileName, s), FileMode.OpenOrCreate,
            FileAccess.ReadWrite, FileShare.ReadWrite, FileOptions.WriteThrough));
    }

    /// <inheritdoc/>
    public override unsafe void ReadAsync(int segmentId, ulong sourceAddress, IntPtr destinationAddress, uint readLength,
        DeviceIOCompletionCallback callback, object context) =>
        _io.Read(() =>
        {
            uint error = 0;
            int total = 0;
            try
            {
                var handle = Segment(segmentId);
                var into = new Span<byte>((void*)destinationAddress, (int)readLength);
                while (total < into.Length)
                {
                    int n = RandomAccess.Read(handle, into[total..], (long)sourceAddress + total);
                    if (n == 0) break; // past the end of the file: FASTER gets what there is
                    total += n;
                }
            }
            catch (Exception e)
            {
                error = ErrorCode(e);
                total = 0;
            }
            callback(error, (uint)total, context);
        });

    /// <inheritdoc/>
    public override unsafe void WriteAsync(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite,
        DeviceIOCompletionCallback callback, object context)
    {
        HandleCapacity(segmentId);
        _io.Write(() =>
        {
            uint error = 0, written = numBytesToWrite;
            try
            {
                RandomAccess.Write(Segment(segmentId), new ReadOnlySpan<byte>((void*)sourceAddress, (int)numBytesToWrite), (long)destinationAddress);
            }
            catch (Exception e)
            {
                error = ErrorCode(e);
                written = 0;
            }
            callback(error, written, context);
        });
    }

    /// <summary>What FASTER's device reports for a failed I/O: the error number of an I/O error, else all ones.</summary>
    private static uint ErrorCode(Exception e) => e is IOException io ? (uint)(io.HResult & 0xFFFF) : uint.MaxValue;

    /// <inheritdoc/>
    public override void RemoveSegmentAsync(int segment, AsyncCallback callback, IAsyncResult result)
    {
        RemoveSegment(segment);
        callback(result);
    }

    /// <inheritdoc/>
    public override void RemoveSegment(int segment)
    {
        if (_segments.TryRemove(segment, out var handle)) handle.Dispose();
        try { File.Delete(GetSegmentFilename(FileName, segment)); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    /// <inheritdoc/>
    public override long GetFileSize(int segment) => segmentSize > 0 ? segmentSize : RandomAccess.GetLength(Segment(segment));

    /// <inheritdoc/>
    public override void Reset()
    {
        foreach (var segment in _segments.Keys)
            if (_segments.TryRemove(segment, out var handle)) handle.Dispose();
    }

    /// <inheritdoc/>
    public override void Dispose()
    {
        _disposed = true;
        Reset();
    }
}
