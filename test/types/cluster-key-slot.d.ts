// cluster-key-slot (ioredis's own slot calculator) ships no types.
declare module 'cluster-key-slot' {
  export default function calculateSlot(key: string): number;
}
